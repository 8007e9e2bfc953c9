"""Child processes of a task: own session, live output relay, group-wide termination.

Written against anyio so backends run under Trio and asyncio. Every child starts in a new
session (``start_new_session=True``): a terminal Ctrl-C reaches only ozw, and the
child's whole process group can be signalled at once. Stopping a group is SIGTERM,
then SIGKILL after the grace period, to the *group*, so grandchildren that ignore
SIGTERM or linger after their parent exited are gone too.
"""

from __future__ import annotations

import collections
import os
import signal
from collections.abc import Mapping, Sequence

import anyio
import anyio.abc

from ozw.backends.execution.ledger import ProcessLedger
from ozw.backends.execution.machine_limits import start_refused
from ozw.backends.execution.procfs import all_stats
from ozw.backends.execution.spawn import ChildProcess, spawn
from ozw.tasks.failures import normalise_exit_code
from ozw.telemetry.logs import TaskLog, log_command

MAX_LINE = 16 * 1024
"""Longer output lines are split: a chatty agent must not grow our memory."""

PIPE_DRAIN_GRACE = 5.0
"""How long to keep reading output after the group is gone (a daemon that left the
group may hold our pipes open forever)."""

GROUP_POLL_INTERVAL = 0.05


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running.

    ``killpg(pgid, 0)`` also succeeds for zombies, and an orphaned grandchild stays a
    zombie forever under an init that does not reap (a container's PID 1 often does
    not): every cancellation would then wait the full grace period. On Linux the
    group's members are therefore checked in /proc, zombies not counting.
    """
    if not signal_group(pgid, 0):  # type: ignore[arg-type]
        return False
    running = _group_running_in_proc(pgid)
    return True if running is None else running


def _group_running_in_proc(pgid: int) -> bool | None:
    """Whether a non-zombie member of the group exists per /proc; None without /proc."""
    try:
        return any(stat.pgrp == pgid and stat.running for stat in all_stats())
    except OSError:
        return None


class ProcessRunner:
    """Runs a backend's child processes and can stop all of them at once.

    ``kill_grace`` is the pause between SIGTERM and SIGKILL when a run is cancelled.
    :meth:`kill_all` is the second-Ctrl-C path: SIGKILL to every live group now.
    """

    def __init__(self, kill_grace: float = 10.0, ledger: ProcessLedger | None = None) -> None:
        self.kill_grace = kill_grace
        self.ledger = ledger
        """Where started groups are recorded, so a later start-up can stop them if this
        worker dies without doing so (see :mod:`~ozw.backends.execution.ledger`)."""
        self._groups: set[int] = set()
        self._starting = anyio.Lock()
        """One child starts at a time, each after a checkpoint: when a thousand tasks
        reach their start at once, the loop runs one start's own work (the checks,
        the ledger) per pass, not all of them in one pass (issue 14)."""

    @property
    def live_groups(self) -> frozenset[int]:
        return frozenset(self._groups)

    def kill_all(self) -> None:
        """SIGKILL every process group this runner started and has not reaped."""
        for pgid in list(self._groups):
            signal_group(pgid, signal.SIGKILL)

    async def run(
        self,
        command: Sequence[str],
        *,
        log: TaskLog,
        label: str,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str] | None = None,
        stdin: bytes | None = None,
        stderr_tail: collections.deque[str] | None = None,
    ) -> int:
        """Run ``command`` to completion, relaying its output into ``log`` line by line.

        Output lines are tagged ``<label> stdout`` / ``<label> stderr``. Returns the
        normalised exit code (signal N → 128+N). On cancellation the whole group is
        stopped (SIGTERM, ``kill_grace``, SIGKILL) before the cancellation propagates.
        """
        log_command(log, command)
        async with self._starting:
            try:
                process = await spawn(command, env=env, cwd=cwd, stdin=stdin is not None)
            except OSError as exc:
                raise start_refused(exc) from exc
            pgid = process.pid
            self._groups.add(pgid)
            if self.ledger is not None:
                self.ledger.record(pgid, label)
        # The relays are shielded from cancellation: what a child writes while its group
        # is being stopped (an agent's last words on SIGTERM) still reaches the log, and
        # a chatty child cannot block on a full pipe through its grace period. Once the
        # child is gone they get PIPE_DRAIN_GRACE to read what is left.
        drains = (anyio.CancelScope(shield=True), anyio.CancelScope(shield=True))
        feed = anyio.CancelScope()
        try:
            async with anyio.create_task_group() as tg:
                assert process.stdout is not None
                assert process.stderr is not None
                tg.start_soon(_drain, drains[0], process.stdout, log, f"{label} stdout", None)
                tg.start_soon(
                    _drain, drains[1], process.stderr, log, f"{label} stderr", stderr_tail
                )
                if stdin is not None:
                    tg.start_soon(_feed, feed, process, stdin)
                try:
                    returncode = await process.wait()
                    # Nobody is owed the rest of the input now: a detached grandchild
                    # holding stdin without reading must not keep us writing.
                    feed.cancel()
                    # The leader is gone; anything left of its group is a stray.
                    signal_group(pgid, signal.SIGKILL)
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        if not await self.terminate(process):
                            log.warning(
                                "%s did not exit within %gs of SIGTERM (kill_grace): killed",
                                label,
                                self.kill_grace,
                            )
                    raise
                finally:
                    deadline = anyio.current_time() + PIPE_DRAIN_GRACE
                    for scope in drains:
                        scope.deadline = deadline
        finally:
            self._groups.discard(pgid)
            if self.ledger is not None:
                self.ledger.forget(pgid)
            with anyio.CancelScope(shield=True):
                await process.aclose()
        return normalise_exit_code(returncode)

    async def terminate(self, process: ChildProcess) -> bool:
        """SIGTERM the group, wait up to ``kill_grace`` for all of it to exit, then SIGKILL.

        Returns True when the group ended on SIGTERM, False when it had to be killed.
        """
        pgid = process.pid
        signal_group(pgid, signal.SIGTERM)
        with anyio.move_on_after(self.kill_grace) as grace:
            await process.wait()
            # No event tells when the last member of a group exits: poll.
            while group_alive(pgid):  # noqa: ASYNC110
                await anyio.sleep(GROUP_POLL_INTERVAL)
        signal_group(pgid, signal.SIGKILL)
        with anyio.move_on_after(self.kill_grace):
            await process.wait()
        return not grace.cancelled_caught


async def _feed(scope: anyio.CancelScope, process: ChildProcess, data: bytes) -> None:
    assert process.stdin is not None
    try:
        with scope:
            await process.stdin.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass  # the child exited without reading everything: its exit status tells
    finally:
        with anyio.CancelScope(shield=True):
            await process.stdin.aclose()


async def _drain(
    scope: anyio.CancelScope,
    stream: anyio.abc.ByteReceiveStream,
    log: TaskLog,
    label: str,
    tail: collections.deque[str] | None,
) -> None:
    with scope:
        await _relay(stream, log, label, tail)


async def _relay(
    stream: anyio.abc.ByteReceiveStream,
    log: TaskLog,
    label: str,
    tail: collections.deque[str] | None,
) -> None:
    pending = b""

    def emit(raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        log.output(label, line)
        if tail is not None:
            tail.append(line)

    try:
        async for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                emit(raw)
            while len(pending) > MAX_LINE:
                emit(pending[:MAX_LINE])
                pending = pending[MAX_LINE:]
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    finally:
        if pending:
            emit(pending)
