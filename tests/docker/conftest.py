"""A real Docker engine, test images and local registries for the docker backend tests.

See ``tests/docker/README.md``. Everything here is session-scoped and synchronous
(pytest-trio forbids session-scoped async fixtures): the engine starts once per run.
When no engine can be had the tests FAIL with the reason; they never skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NoReturn

import attrs
import pytest

from tests.docker.engine import NoEngine, docker_engine
from tests.support.ozw_command import run_ozw
from tests.support.ozw_process import REPO
from tests.support.ports import free_port

IMAGES_DIR = Path(__file__).parent / "images"
BUSYBOX_CANDIDATES = ("/usr/bin/busybox", "/bin/busybox")
REGISTRY_USER = "ozw"
REGISTRY_PASSWORD = "s3cret-registry-password"


@attrs.frozen
class Engine:
    """A Docker engine the tests may use: its ``DOCKER_HOST`` and the CLI environment."""

    host: str
    private: bool

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def run(
        self,
        *args: str,
        input: bytes | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """``docker <args>`` against this engine (synchronous: for fixtures)."""
        result = subprocess.run(
            ["docker", *args],
            input=input,
            capture_output=True,
            env=dict(env) if env is not None else self.env,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result

    def text(self, *args: str) -> str:
        return self.run(*args).stdout.decode().strip()

    def ozw(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``ozw ARGS`` from the repository on this engine, without the host's API key."""
        return run_ozw(*args, cwd=REPO, env={"DOCKER_HOST": self.host}, timeout=120)


def _fail(reason: str) -> NoReturn:
    pytest.fail(f"no Docker engine for the docker backend tests: {reason}", pytrace=False)


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The engine: ``DOCKER_HOST`` when it answers, else a private ``dockerd`` (whose
    log is kept when a test failed: see ``tests/docker/README.md``)."""
    try:
        with docker_engine(keep_log=lambda: request.session.testsfailed > 0) as (host, private):
            yield Engine(host, private=private)
    except NoEngine as exc:
        _fail(str(exc))


# --- images ---------------------------------------------------------------------------


def _busybox() -> bytes:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.exists():
            return path.read_bytes()
    _fail("busybox-static is not installed (apt-get install busybox-static)")


def _applets() -> list[str]:
    busybox = next(p for p in BUSYBOX_CANDIDATES if Path(p).exists())
    listed = subprocess.run([busybox, "--list"], capture_output=True, check=True, timeout=10)
    return [name for name in listed.stdout.decode().split() if name != "busybox"]


def _add_file(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 1_700_000_000
    archive.addfile(info, io.BytesIO(data))


def _add_dir(archive: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = 1_700_000_000
    archive.addfile(info)


WRAPPER = b"""#!/bin/sh
# A set-up wrapper as images use them: it must run, then hand over to the command.
echo "standin: wrapper ran with $# arguments"
export WRAPPED_BY=wrapper
exec "$@"
"""


def busybox_rootfs(files: Mapping[str, tuple[bytes, int]] | None = None) -> bytes:
    """A rootfs tar: ``/bin/busybox`` plus one relative symlink per applet.

    The equivalent of ``busybox --install -s`` into a staging directory, but written
    straight into the tar so the links are relative (``--install -s`` makes them
    point at the staging path, which does not exist inside the image).
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for directory in ("bin", "tmp", "etc", "proc", "sys", "dev", "workspace"):
            _add_dir(archive, directory, 0o1777 if directory == "tmp" else 0o755)
        _add_file(archive, "bin/busybox", _busybox(), 0o755)
        for applet in _applets():
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            link.mtime = 1_700_000_000
            archive.addfile(link)
        for name, (data, mode) in (files or {}).items():
            _add_file(archive, name.lstrip("/"), data, mode)
    return buffer.getvalue()


def files_rootfs(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """A rootfs tar of just ``files`` (path → (content, mode))."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, (data, mode) in files.items():
            _add_file(archive, name.lstrip("/"), data, mode)
    return buffer.getvalue()


def import_image(engine: Engine, tag: str, rootfs: bytes, *changes: str) -> str:
    """``docker import`` a rootfs tar as ``tag`` (with ``--change`` each of ``changes``);
    returns the image ID."""
    result = engine.run(
        "import", *(f"--change={change}" for change in changes), "-", tag, input=rootfs
    )
    return result.stdout.decode().strip()


def load_foreign_image(engine: Engine, tag: str, rootfs: bytes, architecture: str) -> str:
    """Load ``rootfs`` as an image claiming another ``architecture``; returns its ID.

    ``docker import --platform`` is ignored by engines without multi-platform support
    (Debian's 20.10 among them), so the image is written in ``docker save`` format
    with a hand-made configuration and loaded.
    """
    diff_id = "sha256:" + hashlib.sha256(rootfs).hexdigest()
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {},
            "created": "2026-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]
    ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        _add_file(archive, config_name, config)
        _add_file(archive, "layer/layer.tar", rootfs)
        _add_file(archive, "manifest.json", manifest)
    engine.run("load", input=buffer.getvalue())
    return engine.text("image", "inspect", "--format={{.Id}}", tag)


@attrs.frozen
class Images:
    """The test images, by reference (the ``images`` fixture imports them all)."""

    task: str
    wrapped: str
    """The task image with ``ENTRYPOINT ["/wrapper.sh"]`` (:data:`WRAPPER`)."""
    agent: str
    extra: str
    foreign: str
    prefix: str

    @classmethod
    def named(cls, prefix: str) -> Images:
        """The references of every test image under ``prefix`` (importing is the caller's)."""
        return cls(
            task=f"{prefix}/task:1",
            wrapped=f"{prefix}/wrapped:1",
            agent=f"{prefix}/agent:1",
            extra=f"{prefix}/extra:1",
            foreign=f"{prefix}/foreign-arm64:1",
            prefix=prefix,
        )

    def fresh_sidecar(self, engine: Engine, label: str) -> str:
        """A new agent sidecar image (new ID, so its volume is new) for one test."""
        tag = f"{self.prefix}/agent-{label}-{uuid.uuid4().hex[:8]}:1"
        import_image(engine, tag, _agent_rootfs(extra=uuid.uuid4().hex.encode()))
        return tag


def _agent_rootfs(extra: bytes = b"") -> bytes:
    script = (IMAGES_DIR / "standin-entrypoint.sh").read_bytes()
    files = {"/entrypoint.sh": (script, 0o755)}
    if extra:
        files["/nonce"] = (extra, 0o644)
    return files_rootfs(files)


@pytest.fixture(scope="session")
def images(engine: Engine) -> Iterator[Images]:
    """A busybox task image, the stand-in agent sidecar, an extra sidecar, a foreign image."""
    prefix = f"ozwtest-{uuid.uuid4().hex[:6]}"
    rootfs = busybox_rootfs()
    built = Images.named(prefix)
    import_image(engine, built.task, rootfs)
    wrapped = busybox_rootfs({"/wrapper.sh": (WRAPPER, 0o755)})
    import_image(engine, built.wrapped, wrapped, 'ENTRYPOINT ["/wrapper.sh"]')
    import_image(engine, built.agent, _agent_rootfs())
    import_image(engine, built.extra, files_rootfs({"/hello.txt": (b"hello from extra\n", 0o644)}))
    native = engine.text("version", "--format={{.Server.Arch}}")
    load_foreign_image(engine, built.foreign, rootfs, "arm64" if native != "arm64" else "amd64")
    yield built
    if not engine.private:
        _remove_leftovers(engine, prefix)


def _remove_leftovers(engine: Engine, prefix: str) -> None:
    """On a shared engine, remove the images and volumes named after ``prefix``."""
    listed = engine.text("image", "ls", "--format={{.Repository}}:{{.Tag}}")
    ours = [ref for ref in listed.split() if prefix in ref]
    if ours:
        engine.run("image", "rm", "--force", *ours, check=False)
    volumes = engine.text("volume", "ls", "--quiet").split()
    # Sidecar volumes are named after the repository with ':' and '/' mapped to '-'.
    volume_prefix = prefix.replace(":", "-").replace("/", "-")
    mine = [v for v in volumes if v.startswith(volume_prefix)]
    if mine:
        engine.run("volume", "rm", "--force", *mine, check=False)


# --- registries -----------------------------------------------------------------------


@attrs.frozen
class Registry:
    """A local ``docker-registry`` at ``address``."""

    address: str

    def ref(self, path: str) -> str:
        return f"{self.address}/{path}"


@attrs.frozen
class Registries:
    open: Registry
    auth: Registry
    docker_config: str
    """A ``DOCKER_CONFIG`` directory logged in to ``auth``."""
    empty_config: str
    """A ``DOCKER_CONFIG`` directory without any credentials."""


@contextlib.contextmanager
def _registry(root: Path, name: str, htpasswd: Path | None) -> Iterator[Registry]:
    binary = shutil.which("docker-registry")
    if binary is None:
        _fail("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    config = [
        "version: 0.1",
        "log:",
        "  level: error",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {root / name / 'data'}",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: ozw-test-secret",
    ]
    if htpasswd is not None:
        config += ["auth:", "  htpasswd:", "    realm: ozw-test", f"    path: {htpasswd}"]
    (root / name).mkdir(parents=True)
    config_path = root / name / "config.yml"
    config_path.write_text("\n".join(config) + "\n")
    log = open(root / name / "registry.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [binary, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401 from the auth registry: it answers
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    _fail(f"docker-registry did not start: see {root / name / 'registry.log'}")
                time.sleep(0.1)
        yield Registry(f"127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def registries(engine: Engine, images: Images) -> Iterator[Registries]:
    """An open and a password-protected registry, each holding the task image."""
    htpasswd_bin = shutil.which("htpasswd")
    if htpasswd_bin is None:
        _fail("htpasswd is not installed (apt-get install apache2-utils)")
    root = Path(tempfile.mkdtemp(prefix="ozw-registry-"))
    try:
        line = subprocess.run(
            [str(htpasswd_bin), "-Bbn", REGISTRY_USER, REGISTRY_PASSWORD],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        htpasswd = root / "htpasswd"
        htpasswd.write_bytes(line)
        logged_in = root / "docker-config"
        empty = root / "empty-config"
        logged_in.mkdir()
        empty.mkdir()
        with _registry(root, "open", None) as open_, _registry(root, "auth", htpasswd) as auth:
            # localhost registries are insecure-allowed by default: plain HTTP works.
            login_env = {**engine.env, "DOCKER_CONFIG": str(logged_in)}
            engine.run(
                "login",
                "--username",
                REGISTRY_USER,
                "--password-stdin",
                auth.address,
                input=REGISTRY_PASSWORD.encode(),
                env=login_env,
            )
            for registry in (open_, auth):
                for source, path in ((images.task, "ozw/task:1"), (images.agent, "ozw/agent:1")):
                    target = registry.ref(path)
                    engine.run("tag", source, target)
                    engine.run("push", target, env=login_env)
                    engine.run("image", "rm", target)
            yield Registries(open_, auth, str(logged_in), str(empty))
            if not engine.private:
                for registry in (open_, auth):
                    _remove_leftovers(engine, registry.address)
    finally:
        shutil.rmtree(root, ignore_errors=True)
