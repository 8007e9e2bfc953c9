"""The command backend proper: :class:`CommandBackend`, the check and the cancel command.

Each task is one :class:`~ozw.backends.command.task.CommandTaskRun` (its dispatch); the
backend knows the dispatches still running, so a cancellation waits for one and a
forced stop kills them all (the contract is in :mod:`ozw.backends.command`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar, Final, Unpack

import anyio

from ozw.backends.base import ProcessBackend, WorkerSettings
from ozw.backends.command.rules import BACKEND_NAME, cancel_variables, command_environment
from ozw.backends.command.task import CommandTaskRun
from ozw.backends.execution import SHELL, run_script
from ozw.config import CommandConfig
from ozw.tasks.failures import BackendUnavailable
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog

FORCED_CANCEL_TIMEOUT: Final = 3.0
"""The bound on a cancel command run after a forced stop (within ozw's own 5 s)."""


class CommandBackend(ProcessBackend):
    """Hands each task to ``dispatch_command`` (docs/protocol.md, "command").

    Args:
        config: the ``[backend.command]`` table.
        worker_id: written into every payload.
        environ: the worker's environment (default ``os.environ``), read at construction.
    """

    name: ClassVar[str] = BACKEND_NAME
    tasks_survive_shutdown: ClassVar[bool] = True

    def __init__(self, config: CommandConfig, **settings: Unpack[WorkerSettings]) -> None:
        super().__init__(kill_grace=config.kill_grace, **settings)
        self.config = config
        self.dispatching: dict[str, CommandTaskRun] = {}
        """The runs whose dispatch command is still running, by task id."""
        self.forced = False
        """Set by :meth:`kill_all`: cancel commands from then on run briefly."""

    async def check(self) -> str:
        """Start-up check: a dispatch command is configured and ``/bin/sh`` can run it."""
        if not self.config.dispatch_command.strip():
            raise BackendUnavailable("command backend: dispatch_command is empty")
        if not os.access(SHELL, os.X_OK):
            raise BackendUnavailable(f"command backend: {SHELL} is not available")
        cancel = "with" if self.config.cancel_command else "without"
        return f"dispatch command set, {cancel} cancel command"

    def open_task(self, params: TaskParams, log: TaskLog) -> CommandTaskRun:
        """The run of one task (no I/O yet)."""
        return CommandTaskRun(self, params, log)

    async def cancel(self, params: TaskParams) -> None:
        """Run ``cancel_command`` for a task, best effort; never raises for its failure.

        Waits first (bounded) for a dispatch of the same task still in flight to end;
        a dispatch that was stopped has run the cancel command itself.
        """
        log = TaskLog(params.task_id)
        in_flight = self.dispatching.get(params.task_id)
        if in_flight is not None:
            # The dispatch, its kill sequence, then its own cancel command and kill sequence.
            bound = 2 * (self.config.dispatch_timeout + 2 * self.config.kill_grace)
            with anyio.move_on_after(bound):
                await in_flight.done.wait()
            if in_flight.cancel_ran:
                return
        await self.run_cancel_command(params, log)

    async def run_cancel_command(self, params: TaskParams, log: TaskLog) -> None:
        """``cancel_command`` once, bounded by ``dispatch_timeout``; its failure logged."""
        command = self.config.cancel_command
        if not command or not command.strip():
            log.info("no cancel_command configured: the dispatched work is left alone")
            return
        env = self.environment(cancel_variables(params))
        # After a forced stop (second Ctrl-C) the operator wants out now: the cancel
        # still runs, but briefly.
        timeout = (
            min(self.config.dispatch_timeout, FORCED_CANCEL_TIMEOUT)
            if self.forced
            else self.config.dispatch_timeout
        )
        result = await run_script(
            self.runner,
            command,
            what="cancel command",
            label="cancel",
            log=log,
            env=env,
            timeout=timeout,
        )
        if result.ok:
            log.info("cancel command succeeded")
        else:
            log.warning("%s", result.describe())

    async def kill_all(self) -> None:
        """SIGKILL every dispatch and cancel command still running (a killed dispatch
        still gets its cancel command, see the package docstring)."""
        self.forced = True
        for run in self.dispatching.values():
            run.killed = True
        self.runner.kill_all()

    def environment(self, forced: Mapping[str, str]) -> dict[str, str]:
        """A command's environment with ``forced`` on top (see :func:`command_environment`)."""
        return command_environment(
            worker=self.environ, configured=self.config.environment, forced=forced
        )
