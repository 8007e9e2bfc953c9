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
from collections.abc import Callable, Iterator
from pathlib import Path

ENGINE_START_TIMEOUT = 60.0
ENGINE_STOP_TIMEOUT = 120.0
"""A daemon stops its containers first (10 s each for one that ignores SIGTERM, then
SIGKILL) within its own 15 s shutdown timeout: far more than that on a loaded
machine, because a SIGKILLed daemon leaves its containerd (its own session) behind."""


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


class PrivateDockerd:
    """A ``dockerd`` under a temporary directory that can be stopped and started again
    (its data root, hence its images, containers and volumes, survive a restart).

    Raises NoEngine when it cannot be started.
    """

    def __init__(self) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise NoEngine("DOCKER_HOST is unset or does not answer, and dockerd is not installed")
        if os.geteuid() != 0:
            raise NoEngine(
                "DOCKER_HOST is unset or does not answer, and a private dockerd needs root"
            )
        if shutil.which("docker") is None:
            raise NoEngine("the docker CLI is not installed")
        # Short path: the daemon's unix sockets must fit in sun_path (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="ozw-dockerd-", dir="/tmp"))
        self.host = f"unix://{self.root / 'docker.sock'}"
        self.log_path = self.root / "dockerd.log"
        self.command = [
            dockerd,
            # vfs works on any filesystem (overlay2 cannot nest on an overlay /tmp).
            "--storage-driver=vfs",
            # No iptables or bridge: no host network changes; containers get docker's
            # default network mode, which is then "none"-like but needs no flag.
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"--host={self.host}",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the daemon and wait until it answers."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + ENGINE_START_TIMEOUT
        while not answers(self.host):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace").splitlines()[-5:]
                self.stop()
                raise NoEngine(f"private dockerd did not start: {' | '.join(tail)}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM the daemon (it stops its containers) and wait for it to exit."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=ENGINE_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the daemon's log."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def remove(self, *, keep_log: bool = False) -> None:
        """Stop the daemon and remove its directory; with ``keep_log`` (a test failed)
        its log is first copied to :func:`kept_log_path`."""
        self.stop()
        if keep_log and self.log_path.exists():
            shutil.copyfile(self.log_path, kept_log_path(self.root))
        shutil.rmtree(self.root, ignore_errors=True)


def kept_log_path(root: Path) -> Path:
    """Where the log of the daemon under ``root`` is kept after a failure."""
    return root.with_name(f"{root.name}-dockerd.log")


@contextlib.contextmanager
def private_dockerd(keep_log: Callable[[], bool] = lambda: False) -> Iterator[PrivateDockerd]:
    """A started :class:`PrivateDockerd`, stopped and removed afterwards (its log kept
    when ``keep_log()`` says so then)."""
    daemon = PrivateDockerd()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.remove(keep_log=keep_log())


@contextlib.contextmanager
def docker_engine(keep_log: Callable[[], bool] = lambda: False) -> Iterator[tuple[str, bool]]:
    """Yield ``(DOCKER_HOST, private)``; raises NoEngine when there is none."""
    given = os.environ.get("DOCKER_HOST")
    if given and answers(given):
        yield given, False
        return
    with private_dockerd(keep_log) as daemon:
        yield daemon.host, True
