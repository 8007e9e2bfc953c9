"""The docker scenarios' world: an engine (``DOCKER_HOST`` or a private ``dockerd``), a
local registry both workers pull from (the Go worker always pulls), and the test images
pushed there under fixed names (tests/docker/README.md describes the images)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs

from tests.docker.conftest import (
    IMAGES_DIR,
    WRAPPER,
    Engine,
    _registry,
    busybox_rootfs,
    import_image,
)
from tests.docker.engine import docker_engine

REPOSITORY: Final = "conformance"
OOM_WRAPPER: Final = b"""#!/bin/sh
# The agent sidecar's /entrypoint.sh: STANDIN_BEHAVIOUR=oom outgrows the smallest memory
# limit an assignment can ask for (instance_shape memory_gb = 1); the rest is the stand-in.
if [ "$STANDIN_BEHAVIOUR" = oom ]; then
    echo "standin: hogging memory"
    hog=$(head -c 1600000000 /dev/zero | tr '\\0' a)
    echo "standin: survived ${#hog}"
    exit 0
fi
exec "$(dirname "$0")/standin.sh" "$@"
"""


@attrs.frozen
class DockerWorld:
    engine: Engine
    registry: str
    """``127.0.0.1:PORT`` (the engine trusts a loopback registry without TLS)."""

    def ref(self, name: str) -> str:
        return f"{self.registry}/{REPOSITORY}/{name}:1"

    def docker(self, *args: str) -> str:
        return self.engine.text(*args)

    def containers(self, image: str) -> list[str]:
        """Containers (running or not) made from ``image``."""
        return self.docker("ps", "-aq", "--filter", f"ancestor={image}").split()

    def inspect(self, container: str) -> dict[str, Any]:
        document: list[dict[str, Any]] = json.loads(self.docker("inspect", container))
        return document[0]

    def logs(self, container: str) -> str:
        done = self.engine.run("logs", container, check=False)
        return (done.stdout + done.stderr).decode(errors="replace")

    def volumes(self) -> list[str]:
        return self.docker("volume", "ls", "-q").split()

    def clean(self) -> None:
        """Remove every container and volume (between scenarios)."""
        if ids := self.docker("ps", "-aq").split():
            self.engine.run("rm", "-f", "-v", *ids, check=False)
        if names := self.volumes():
            self.engine.run("volume", "rm", "-f", *names, check=False)


@contextlib.contextmanager
def docker_world() -> Iterator[DockerWorld]:
    root = Path(tempfile.mkdtemp(prefix="ozw-conf-registry-"))
    try:
        with docker_engine() as (host, private), _registry(root, "open", None) as registry:
            world = DockerWorld(Engine(host, private), registry.address)
            # The Go worker fills a sidecar's volume by running tar as root in the
            # sidecar image itself: sidecars need a shell, tar and a passwd file.
            passwd = {"/etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\n", 0o644)}
            entrypoint = (IMAGES_DIR / "standin-entrypoint.sh").read_bytes()
            images = {
                "task": (busybox_rootfs(passwd), ()),
                "wrapped": (
                    busybox_rootfs({**passwd, "/wrapper.sh": (WRAPPER, 0o755)}),
                    ('ENTRYPOINT ["/wrapper.sh"]',),
                ),
                "agent": (
                    busybox_rootfs(
                        {
                            **passwd,
                            "/entrypoint.sh": (OOM_WRAPPER, 0o755),
                            "/standin.sh": (entrypoint, 0o755),
                        }
                    ),
                    (),
                ),
                "extra": (busybox_rootfs({**passwd, "/hello.txt": (b"hello\n", 0o644)}), ()),
            }
            for name, (rootfs, changes) in images.items():
                import_image(world.engine, world.ref(name), rootfs, *changes)
                world.engine.run("push", world.ref(name))
                world.engine.run("rmi", world.ref(name))  # pulled again by each worker
            yield world
    finally:
        shutil.rmtree(root, ignore_errors=True)


VOLUME_DIGEST: Final = re.compile(r"-[0-9a-f]{12}\b")


def container_config(inspect: dict[str, Any], logs: str) -> dict[str, Any]:
    """A task container as the transcript shows it: what ``docker inspect`` says of its
    command, environment names, mounts, labels and limits, and the arguments the stand-in
    entrypoint reported."""
    config = inspect["Config"]
    host = inspect["HostConfig"]
    mounts = [
        {
            "type": m["Type"],
            "source": VOLUME_DIGEST.sub("-<digest>", m.get("Name") or m["Source"]),
            "destination": m["Destination"],
            "rw": m["RW"],
        }
        for m in inspect["Mounts"]
    ]
    args = [line[len("standin: arg=") :] for line in logs.splitlines() if "standin: arg=" in line]
    return {
        "cmd": config["Cmd"],
        "entrypoint": config["Entrypoint"],
        "working_dir": config["WorkingDir"],
        "env_names": sorted({entry.partition("=")[0] for entry in config["Env"]}),
        "labels": sorted(config.get("Labels") or {}),
        "mounts": sorted(mounts, key=lambda m: str(m["destination"])),
        "memory": host["Memory"],
        "memory_swap": host["MemorySwap"],
        "nano_cpus": host["NanoCpus"],
        "auto_remove": host["AutoRemove"],
        "agent_args": args,
        "wrapped": "standin: wrapper ran" in logs,
    }
