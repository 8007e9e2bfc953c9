"""One task of the command backend: :class:`CommandTaskRun`, one dispatch.

Nothing to set up, one ``dispatch_command`` (exit 0 hands the task off), nothing to
undo. A dispatch that did not end on its own (timed out, stopped, killed) may have
submitted the work already: ``cancel_command`` runs for it before the failure or the
cancellation is reported (see :mod:`ozw.backends.command`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import anyio

from ozw.backends.base import ExecuteResult, TaskRun
from ozw.backends.command.rules import (
    dispatch_failure_cause,
    dispatch_payload,
    dispatch_variables,
    encode_payload,
)
from ozw.backends.execution import require_valid_environment, run_script
from ozw.tasks.failures import FailureReason
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog

if TYPE_CHECKING:
    from ozw.backends.command.backend import CommandBackend

STDERR_TAIL_LINES: Final = 20
"""How many of a failed dispatch command's last stderr lines are logged as a warning."""


class CommandTaskRun(TaskRun):
    """One task of the command backend: nothing to set up, one dispatch, nothing to undo."""

    def __init__(self, backend: CommandBackend, params: TaskParams, log: TaskLog) -> None:
        super().__init__(params, log)
        self.backend = backend
        self.done = anyio.Event()
        """Set when the dispatch command (and any cancel command it needed) has ended."""
        self.killed = False
        """:meth:`CommandBackend.kill_all` SIGKILLed the dispatch command."""
        self.cancel_ran = False
        """The dispatch ran (or is running) the cancel command itself."""

    async def setup(self) -> None:
        """Nothing to prepare: the remote runtime does its own setup."""

    async def execute(self) -> ExecuteResult:
        """Dispatch the task; HANDED_OFF when the dispatch command exited 0."""
        await self._dispatch()
        return ExecuteResult.HANDED_OFF

    async def teardown(self) -> None:
        """Nothing to undo: a handed-off task lives on; a failed dispatch left nothing here."""

    async def _dispatch(self) -> None:
        """Run ``dispatch_command``. Raises TaskFailure unless it exits 0."""
        backend, params, log = self.backend, self.params, self.log
        payload = encode_payload(dispatch_payload(params, worker_id=backend.worker_id))
        env = backend.environment(dispatch_variables(params))
        require_valid_environment(env, FailureReason.DISPATCH_COMMAND, "the dispatch command")
        backend.dispatching[params.task_id] = self
        try:
            try:
                result = await run_script(
                    backend.runner,
                    backend.config.dispatch_command,
                    what="dispatch command",
                    label="dispatch",
                    log=log,
                    env=env,
                    timeout=backend.config.dispatch_timeout,
                    stdin=payload,
                    stderr_lines=STDERR_TAIL_LINES,
                )
            except anyio.get_cancelled_exc_class():
                await self._cancel_stopped_dispatch("was stopped")
                raise
            if result.timed_out:
                await self._cancel_stopped_dispatch("timed out")
                raise result.failure(FailureReason.DISPATCH_TIMEOUT)
            if self.killed and not result.ok:  # exit 0 beat the kill: a hand-off
                await self._cancel_stopped_dispatch("was killed")
        finally:
            if backend.dispatching.get(params.task_id) is self:
                del backend.dispatching[params.task_id]
            self.done.set()
        if result.start_error is not None:
            raise result.failure(FailureReason.DISPATCH_COMMAND)
        if not result.ok:
            # Relayed live at info level; repeated only where those lines were not shown.
            if result.stderr_tail and not log.isEnabledFor(logging.INFO):
                log.warning(
                    "%s; its last %d stderr line(s):",
                    result.describe(),
                    len(result.stderr_tail),
                )
                for line in result.stderr_tail:
                    log.warning("%s", line, extra={"stream": "dispatch stderr"})
            raise result.failure(FailureReason.DISPATCH_COMMAND, dispatch_failure_cause(result))
        log.info("handed off by the dispatch command")

    async def _cancel_stopped_dispatch(self, how: str) -> None:
        """Run ``cancel_command`` after a dispatch that did not end on its own: it may
        have submitted the work already. Shielded (the task's scope is often the one
        cancelled) and bounded by ``dispatch_timeout``; never raises for its failure."""
        if self.cancel_ran:
            return
        self.cancel_ran = True
        command = self.backend.config.cancel_command
        if command and command.strip():
            self.log.info(
                "the dispatch command %s; running cancel_command in case the work was submitted",
                how,
            )
        with anyio.CancelScope(shield=True):
            await self.backend.run_cancel_command(self.params, self.log)
