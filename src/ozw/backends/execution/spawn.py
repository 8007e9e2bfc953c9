"""Starting a child that the kernel ends when the worker dies.

Every child gets ``PR_SET_PDEATHSIG`` = SIGKILL, so an agent does not outlive a worker
killed with SIGKILL (its own children are found at the next start-up through
:mod:`~ozw.backends.execution.ledger`). The parent-death signal fires when the
*thread* that forked the child exits, not the process: Trio (and so
``anyio.open_process`` on Trio) forks in a worker thread that exits after a few idle
seconds, which would kill every agent shortly after it started. So every child starts
on one thread that lives as long as the worker (:mod:`~ozw.backends.execution.starter`,
which also keeps the wait for the child's ``execve`` off the event loop); the child's
pipes and exit are then awaited with anyio's file-descriptor waits (``pidfd`` for the
exit), which work the same under Trio and asyncio.

The signal is set by util-linux ``setpriv --pdeathsig KILL`` in the child, followed
by a one-line ``/bin/sh`` guard that runs the command only if the worker is still its
parent (a worker that died before the signal was set would never send it). No Python
runs in the child, so CPython starts it with ``vfork``, where a pre-exec step forces a
``fork`` that copies the worker's page tables with the GIL held: ~10x longer at 1,000
running tasks (issue 14). Without ``setpriv``
(util-linux before 2.33, or none), a Python pre-exec step sets the signal instead.
The command is checked first (:mod:`~ozw.backends.execution.executables`), so one
that cannot start is still an ``OSError``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import anyio
import anyio.abc

from ozw.backends.execution.executables import check_executable
from ozw.backends.execution.starter import STARTER

PR_SET_PDEATHSIG: Final = 1
READ_SIZE: Final = 65536
EXIT_POLL_INTERVAL: Final = 0.05
"""Exit polling, only where ``pidfd_open`` is missing (Linux before 5.3)."""
GUARD_SHELL: Final = "/bin/sh"
GUARD_SCRIPT: Final = 'worker=$1; shift; [ "$PPID" = "$worker" ] || exit 1; exec "$@"'
"""Runs once the parent-death signal is set: the command only while the worker lives."""


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, resolved once in the parent (nothing to look up after fork)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL: Final = _load_prctl()


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """The pre-exec step: SIGKILL on the forking thread's death; exit at once when the
    worker already died between fork and here (the signal would then never come)."""
    prctl = _PRCTL
    if prctl is None:
        return None
    sig = ctypes.c_ulong(signal.SIGKILL)
    option = ctypes.c_int(PR_SET_PDEATHSIG)

    def step() -> None:
        prctl(option, sig)
        if os.getppid() != parent:
            os._exit(1)

    return step


@functools.cache
def _setpriv() -> str | None:
    """A ``setpriv`` that can set the parent-death signal, or None (checked once)."""
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        probe = subprocess.run(
            [path, "--pdeathsig", "KILL", "--", GUARD_SHELL, "-c", ":"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return path if probe.returncode == 0 else None


def guarded_command(command: Sequence[str], parent: int) -> list[str] | None:
    """``command`` behind ``setpriv`` and the guard (see the module docstring), or None
    when this machine has no suitable ``setpriv``."""
    setpriv = _setpriv()
    if setpriv is None:
        return None
    guard = [GUARD_SHELL, "-c", GUARD_SCRIPT, "ozw-guard", str(parent)]
    return [setpriv, "--pdeathsig", "KILL", "--", *guard, *command]


class _FdReceive(anyio.abc.ByteReceiveStream):
    """The read end of a child's pipe, non-blocking."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd: int | None = fd

    async def receive(self, max_bytes: int = READ_SIZE) -> bytes:
        while True:
            if self._fd is None:
                raise anyio.ClosedResourceError
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def aclose(self) -> None:
        _close(self._fd)
        self._fd = None


class _FdSend(anyio.abc.ByteSendStream):
    """The write end of a child's stdin pipe, non-blocking."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd: int | None = fd

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        while view:
            if self._fd is None:
                raise anyio.ClosedResourceError
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                await anyio.wait_writable(self._fd)
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise anyio.BrokenResourceError from exc

    async def aclose(self) -> None:
        _close(self._fd)
        self._fd = None


def _close(fd: int | None) -> None:
    if fd is not None:
        anyio.notify_closing(fd)  # wakes a task waiting on it with ClosedResourceError
        os.close(fd)


class ChildProcess:
    """A started child: its pid, pipes and exit status (the subset of
    :class:`anyio.abc.Process` that :class:`~ozw.backends.execution.ProcessRunner` uses)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdin = _FdSend(os.dup(popen.stdin.fileno())) if popen.stdin else None
        self.stdout = _FdReceive(os.dup(popen.stdout.fileno())) if popen.stdout else None
        self.stderr = _FdReceive(os.dup(popen.stderr.fileno())) if popen.stderr else None
        for stream in (popen.stdin, popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()  # the dups above are the only copies we read and write
        self._exited = anyio.Lock()
        try:
            self._pidfd: int | None = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            self._pidfd = None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        """The exit status (negative: killed by that signal), once the child exited."""
        async with self._exited:
            while (code := self._popen.poll()) is None:
                if self._pidfd is not None:
                    await anyio.wait_readable(self._pidfd)
                else:
                    await anyio.sleep(EXIT_POLL_INTERVAL)
            return code

    async def aclose(self) -> None:
        """Close the pipes and the pidfd; the child itself is the caller's to stop."""
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                await stream.aclose()
        if self._pidfd is not None:
            _close(self._pidfd)
            self._pidfd = None
        with contextlib.suppress(ChildProcessError):
            self._popen.poll()


async def spawn(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    stdin: bool = False,
) -> ChildProcess:
    """Start ``command`` in its own session, stdout and stderr piped (and stdin when
    ``stdin``), ended by the kernel if the worker dies. Started on the
    :mod:`~ozw.backends.execution.starter` thread; not cancellable (it is short).
    Raises OSError / ValueError."""
    if not command:
        raise ValueError("no command to start")
    parent = os.getpid()

    def start() -> subprocess.Popen[bytes]:
        # All on the starter thread: the checks read files, the first one runs setpriv.
        argv = guarded_command(command, parent)
        if argv is not None:
            check_executable(command[0], env=env, cwd=cwd)
        return subprocess.Popen(
            argv if argv is not None else list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=None if argv is not None else _die_with_parent(parent),
        )

    return ChildProcess(await STARTER.call(start))
