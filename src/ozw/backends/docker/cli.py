"""The docker CLI runner of one backend: every call bounded and cancellable, and the
registry of what the backend created.

Every call is an ``anyio.run_process`` (killed at once when cancelled) or, for
``docker start --attach``, a process under :class:`~ozw.backends.execution.ProcessRunner`,
so cancellation always reaches the child and no thread pool is involved. Each child
runs in its own session (a terminal Ctrl-C must reach only ozw).

Short calls are bounded by ``call_timeout`` (:data:`CALL_TIMEOUT`), pulls and the
export that fills a sidecar volume by ``transfer_timeout`` (:data:`TRANSFER_TIMEOUT`);
clean-up calls are shielded and bounded by :data:`CLEANUP_TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
from collections.abc import Mapping
from typing import Final

import anyio
import anyio.abc
import attrs

from ozw.backends.docker.rules import docker_error
from ozw.backends.execution import ProcessRunner, bounded, cleanup_bound
from ozw.tasks.failures import FailureReason
from ozw.telemetry.logs import log_command

logger = logging.getLogger(__name__)

CLEANUP_TIMEOUT: Final = 60.0
"""Bound of each shielded clean-up call (rm -f, volume rm), beyond any stop grace."""
CALL_TIMEOUT: Final = 120.0
"""Default bound of each short docker call of a task (inspect, create, volume create)."""
TRANSFER_TIMEOUT: Final = 3600.0
"""Default bound of a pull and of the export filling a sidecar volume: long, because
big images on slow links take long, but finite, because a hung daemon must not hold
a slot forever when ``task_timeout`` is off."""
REMOVAL_POLL: Final = 0.1
"""Pause between retries of a removal the daemon says is already in progress."""
CLI_KILL_GRACE: Final = 0.5
"""Grace of the ``docker start -a`` CLI on cancellation. It proxies our SIGTERM to the
container and would then wait for it; the container's own grace is ``docker stop``'s."""


@attrs.frozen
class CallResult:
    """What one docker CLI call returned."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def error(self) -> str:
        """The CLI's error as one line."""
        return docker_error(self.stderr)


class DockerCLI:
    """Runs the docker CLI for one backend and tracks the containers and volumes it made.

    Args:
        docker: the docker CLI (a name on ``PATH`` or a path).
        environ: the environment of every docker CLI child (and of whatever it runs,
            such as credential helpers): the worker's, without ``WARP_API_KEY``.
        runner: runs ``docker start --attach`` with its output relayed live.
    """

    def __init__(self, docker: str, environ: Mapping[str, str], runner: ProcessRunner) -> None:
        self.docker = docker
        self.environ = dict(environ)
        self.call_timeout: float = CALL_TIMEOUT
        """Bound of each short docker call of a task (see :meth:`bounded`)."""
        self.transfer_timeout: float = TRANSFER_TIMEOUT
        """Bound of a pull and of a sidecar volume's export stream."""
        self.runner = runner
        self.containers: set[str] = set()
        """Containers created and not yet removed (or, cleanup off, released)."""
        self.volumes: set[str] = set()
        """Private ``read_write`` sidecar volumes of running tasks (reapers skip them)."""

    # -- calls --

    async def run(
        self,
        *args: str,
        input: bytes | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> CallResult:
        """Run ``docker <args>`` to completion (killed at once when cancelled)."""
        env = self.environ if extra_env is None else {**self.environ, **extra_env}
        log_command(logger, [self.docker, *args])
        completed = await anyio.run_process(
            [self.docker, *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
            env=env,
            start_new_session=True,
        )
        return CallResult(completed.returncode, completed.stdout, completed.stderr)

    def bounded(
        self, reason: FailureReason, what: str, *, long: bool = False
    ) -> contextlib.AbstractContextManager[None]:
        """Bound the docker calls inside; a timeout fails the task with ``reason``.

        ``call_timeout`` applies, or ``transfer_timeout`` when ``long``. ``what`` says
        what was being done ("inspecting image x") in the failure's message.
        """
        seconds = self.transfer_timeout if long else self.call_timeout
        return bounded(
            seconds, reason, f"{what}: the docker CLI", hint="is the Docker daemon hung?"
        )

    async def cleanup(self, *args: str) -> CallResult | None:
        """A shielded, bounded clean-up call; None when it did not finish or run."""
        with cleanup_bound(CLEANUP_TIMEOUT):
            try:
                return await self.run(*args)
            except OSError as exc:
                logger.warning("docker %s failed: %s", args[0], exc)
        return None

    async def stream(self, source: list[str], destination: list[str]) -> list[CallResult]:
        """``docker <source> | docker <destination>`` through an OS pipe, to both ends.

        Returns both results (stdout empty); cancellation kills both processes.
        """
        read_fd, write_fd = os.pipe()
        processes: list[anyio.abc.Process] = []
        try:
            for args, stdin, stdout in (
                (source, subprocess.DEVNULL, write_fd),
                (destination, read_fd, subprocess.DEVNULL),
            ):
                log_command(logger, [self.docker, *args])
                processes.append(
                    await anyio.open_process(
                        [self.docker, *args],
                        stdin=stdin,
                        stdout=stdout,
                        stderr=subprocess.PIPE,
                        env=self.environ,
                        start_new_session=True,
                    )
                )
        except BaseException:
            for process in processes:
                process.kill()
            raise
        finally:
            # The children hold their own copies; ours would keep the pipe open forever.
            os.close(read_fd)
            os.close(write_fd)
        errors: list[bytes] = [b"", b""]

        async def finish(index: int) -> None:
            process = processes[index]
            assert process.stderr is not None
            errors[index] = b"".join([chunk async for chunk in process.stderr])
            await process.wait()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(finish, 0)
                tg.start_soon(finish, 1)
        except BaseException:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            raise
        finally:
            with anyio.CancelScope(shield=True):
                for process in processes:
                    await process.aclose()
        return [
            CallResult(process.returncode if process.returncode is not None else -1, b"", stderr)
            for process, stderr in zip(processes, errors, strict=True)
        ]

    # -- what this backend created --

    def track(self, name: str) -> None:
        """Register a container for removal (before its ``docker create`` runs)."""
        self.containers.add(name)

    def untrack(self, name: str) -> None:
        self.containers.discard(name)

    def track_volume(self, name: str) -> None:
        """Register a private volume (before its ``docker volume create`` runs)."""
        self.volumes.add(name)

    def untrack_volume(self, name: str) -> None:
        self.volumes.discard(name)

    async def remove_containers(self, *names: str) -> bool:
        """``docker rm -f``; True when all are gone (also when they never existed).

        A removal already under way elsewhere (``kill_all`` beside a task's teardown)
        is waited for: the daemon refuses a second one until the first has finished.
        """
        with cleanup_bound(CLEANUP_TIMEOUT):
            while True:
                result = await self.cleanup("rm", "--force", *names)
                if result is None or "is already in progress" not in result.error:
                    break
                await anyio.sleep(REMOVAL_POLL)
        gone = result is not None and (result.ok or "No such container" in result.error)
        if gone:
            self.containers.difference_update(names)
        return gone

    async def stop(self, name: str, grace: float, *, remove: bool) -> None:
        """``docker stop`` with ``grace``, then ``rm -f`` when ``remove`` (else released)."""
        seconds = max(0, math.ceil(grace))
        with cleanup_bound(seconds + CLEANUP_TIMEOUT):
            await self.cleanup("stop", f"--time={seconds}", name)
            if remove:
                await self.remove_containers(name)
            else:
                self.untrack(name)

    async def remove_volume(self, name: str) -> bool:
        """``docker volume rm -f``; True when the volume is gone (or never existed)."""
        result = await self.cleanup("volume", "rm", "--force", name)
        gone = result is not None and (result.ok or "no such volume" in result.error.lower())
        if gone:
            self.untrack_volume(name)
        return gone
