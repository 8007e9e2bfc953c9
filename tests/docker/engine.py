"""A Docker engine for the docker tests and benchmarks: ``DOCKER_HOST`` when it answers,
else a private ``dockerd`` under ``/tmp`` (stopped afterwards).

"No engine" is :class:`NoEngine` with the reason; the test fixture turns it into a
failure (never a skip), the benchmark into a loud "skipped" row.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ENGINE_START_TIMEOUT = 60.0


class NoEngine(Exception):
    """No Docker engine could be had; the message says why."""


def answers(host: str) -> bool:
    """Whether ``docker version`` reaches a daemon at ``host``."""
    try:
        result = subprocess.run(
            ["docker", "version", "--format={{.Server.Version}}"],
            capture_output=True,
            env={**os.environ, "DOCKER_HOST": host},
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@contextlib.contextmanager
def private_dockerd() -> Iterator[str]:
    """Start ``dockerd`` under a temporary directory; yield its ``DOCKER_HOST``.

    Raises NoEngine when it cannot be started.
    """
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise NoEngine("DOCKER_HOST is unset or does not answer, and dockerd is not installed")
    if os.geteuid() != 0:
        raise NoEngine("DOCKER_HOST is unset or does not answer, and a private dockerd needs root")
    if shutil.which("docker") is None:
        raise NoEngine("the docker CLI is not installed")
    # Short path: the daemon's unix sockets must fit in sun_path (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="ozw-dockerd-", dir="/tmp"))
    sock = root / "docker.sock"
    host = f"unix://{sock}"
    log_path = root / "dockerd.log"
    command = [
        dockerd,
        # vfs works on any filesystem (overlay2 cannot nest on an overlay /tmp).
        "--storage-driver=vfs",
        # No iptables or bridge: no host network changes; containers get docker's
        # default network mode, which is then "none"-like but needs no flag.
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'dockerd.pid'}",
        f"--host={host}",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + ENGINE_START_TIMEOUT
        while not answers(host):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").splitlines()[-5:]
                raise NoEngine(f"private dockerd did not start: {' | '.join(tail)}")
            time.sleep(0.2)
        yield host
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def docker_engine() -> Iterator[tuple[str, bool]]:
    """Yield ``(DOCKER_HOST, private)``; raises NoEngine when there is none."""
    given = os.environ.get("DOCKER_HOST")
    if given and answers(given):
        yield given, False
        return
    with private_dockerd() as host:
        yield host, True
