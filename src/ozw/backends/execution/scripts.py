"""Operator scripts (``/bin/sh -c``): set-up, teardown, dispatch and cancel commands.

:func:`run_script` runs one to its end, bounded, and returns a :class:`ScriptResult`
instead of raising, so each caller decides what a failure means: a task failure
(set-up, dispatch), a logged warning (a best-effort cancel) or a raised teardown
failure. Only cancellation of the caller's scope propagates (after the script's whole
process group is gone).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping
from typing import Final

import anyio
import attrs

from ozw.backends.execution.processes import ProcessRunner
from ozw.config import format_duration
from ozw.tasks.failures import FailureReason, TaskFailure, describe_exit
from ozw.telemetry.logs import TaskLog

SHELL: Final = "/bin/sh"


@attrs.frozen
class ScriptResult:
    """How one script run ended."""

    what: str
    """The script, for people: ``setup command``."""
    exit_code: int | None = None
    """Its normalised exit code (signal N → 128+N); None when it did not end on its own."""
    timeout: float | None = None
    """The bound it ran into, when it timed out (its group was stopped)."""
    start_error: str | None = None
    """Why it could not start, when it did not."""
    stderr_tail: tuple[str, ...] = ()
    """Its last stderr lines, when the caller asked for them."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def timed_out(self) -> bool:
        return self.timeout is not None

    def describe(self) -> str:
        """``setup command exited with exit code 3`` / ``... timed out after 5s`` / ..."""
        if self.start_error is not None:
            return f"{self.what} could not start: {self.start_error}"
        if self.timeout is not None:
            return f"{self.what} timed out after {format_duration(self.timeout)}"
        if self.exit_code is None:
            return f"{self.what} did not finish"
        return f"{self.what} exited with {describe_exit(self.exit_code)}"

    def failure(self, reason: FailureReason, cause: str | None = None) -> TaskFailure:
        """The task failure this run stands for (``cause`` defaults to :meth:`describe`).

        No exit code: that field is the agent's own exit only (docs/protocol.md).
        """
        return TaskFailure(reason, cause if cause is not None else self.describe())


async def run_script(
    runner: ProcessRunner,
    command: str,
    *,
    what: str,
    label: str,
    log: TaskLog,
    env: Mapping[str, str],
    timeout: float,
    cwd: str | os.PathLike[str] | None = None,
    stdin: bytes | None = None,
    stderr_lines: int = 0,
) -> ScriptResult:
    """Run ``/bin/sh -c <command>`` to its end, its output relayed into ``log`` as
    ``<label> stdout`` / ``<label> stderr``; past ``timeout`` its process group is
    stopped (SIGTERM, ``kill_grace``, SIGKILL) and the result says it timed out.

    ``stderr_lines`` > 0 keeps that many last stderr lines in the result.
    """
    tail: collections.deque[str] | None = (
        collections.deque(maxlen=stderr_lines) if stderr_lines > 0 else None
    )
    code: int | None = None
    with anyio.move_on_after(timeout) as scope:
        try:
            code = await runner.run(
                [SHELL, "-c", command],
                log=log,
                label=label,
                env=env,
                cwd=cwd,
                stdin=stdin,
                stderr_tail=tail,
            )
        except (OSError, ValueError) as exc:
            # ValueError: what the OS refuses before exec (a NUL in an argument).
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return ScriptResult(what, start_error=reason)
    stderr_tail = tuple(tail) if tail is not None else ()
    if scope.cancelled_caught and code is None:
        return ScriptResult(what, timeout=timeout, stderr_tail=stderr_tail)
    return ScriptResult(what, exit_code=code, stderr_tail=stderr_tail)
