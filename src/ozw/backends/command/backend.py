"""The command backend: hand each task to the operator's own scheduler (docs/protocol.md).

For every task ozw runs ``dispatch_command`` with ``/bin/sh -c`` and writes one JSON
document, the *dispatch payload* (:func:`dispatch_payload`), to its stdin::

    {"version": 1, "run_id", "execution_id", "server_root_url", "worker_id",
     "docker_image", "base_args", "env", "sidecars", "task"}

shaped like the Go worker's (``execution_id`` a string, ``""`` when the assignment
had none; ``task`` always with ``id``, ``title``, ``task_definition.prompt``,
``created_at``, ``updated_at``, see :func:`payload_task`), so a dispatch script
written for the Go worker runs unchanged.

Exit status 0 means the task was handed off: the remote runtime now owns it and
reports for itself, so the worker sends no terminal message and frees the slot at
once. A non-zero exit fails the task with ``dispatch_command`` (the exit code and the
last stderr line in the message, the last stderr lines in the log); a command still
running after ``dispatch_timeout`` has its whole process group killed and fails the
task with ``dispatch_timeout``. A command that cannot be found is exit status 127 of
the shell, so it is classified by its exit code like any other failure.

A server cancellation of a handed-off task (or of one still dispatching) runs the
optional ``cancel_command``, best effort: bounded by ``dispatch_timeout``, its failure
logged as a warning, never the task's result. Hand-offs survive the worker: shutdown
runs no cancel command for them.

A dispatch command that did not finish on its own may already have submitted the
work: one that timed out, one whose task scope was cancelled (a server cancellation,
``task_timeout``, the worker's forced stop) and one killed by :meth:`CommandBackend.kill_all`.
Once its group is gone, ``cancel_command`` runs for it in the same best-effort way
(shielded, bounded by ``dispatch_timeout``) before the failure or cancellation is
reported, so the server's re-queued task does not run twice. After a forced stop
(:meth:`CommandBackend.kill_all`, the second Ctrl-C) such a cancel command gets at most
:data:`FORCED_CANCEL_TIMEOUT`: the operator asked to stop now.

Environment of both commands (later layers win; see :func:`command_environment`):

1. the worker's environment, *without* ``WARP_API_KEY``: the worker's own Oz
   credential has no business in an operator script (nor in whatever it starts);
2. the configured ``environment`` (an entry without value inherits the worker's
   variable, and is skipped when the worker has none). Listing ``WARP_API_KEY`` here
   explicitly is the way to pass it on deliberately;
3. forced, never overridable: ``OZ_RUN_ID``, ``OZ_EXECUTION_ID`` (empty when the
   assignment had none), ``OZ_WORKER_BACKEND=command`` and, for the dispatch command
   only, ``OZ_SERVER_ROOT_URL`` and ``OZ_DOCKER_IMAGE`` (:func:`dispatch_variables`).

The task environment (``TaskParams.env``, which holds the task's secrets) travels
only in the payload's ``env``: never in a command's environment or argv. The
configured ``environment`` goes into the commands' process environment, not into
the payload: it configures the operator's scripts, and a script forwards to the
remote runtime whatever it chooses.

Choices where the contract is silent:

- The payload is compact JSON, ASCII-escaped (it survives any locale and a lone
  surrogate), followed by one newline, keys in the order above.
- ``cancel_command`` gets no stdin (the payload carries secrets a cancel does not need).
- When a cancellation arrives while the task is still being dispatched, the task's
  scope is cancelled (the dispatch command's group is stopped) and the cancel command
  runs only once the dispatch command is gone, so a script that had already started
  the remote work finds what it needs to stop it. It runs once: the stopped dispatch
  runs it, and :meth:`CommandBackend.cancel` only waits for that.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

import anyio
import attrs

from ozw.backends.base import ExecuteResult, ProcessBackend, TaskRun
from ozw.backends.execution import (
    SHELL,
    ScriptResult,
    configured_environment,
    inherited_environment,
    layered_environment,
    require_valid_environment,
    run_script,
)
from ozw.config import CommandConfig, EnvEntry
from ozw.tasks.failures import BackendUnavailable, FailureReason
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog

logger = logging.getLogger(__name__)

PAYLOAD_VERSION: Final = 1
GO_ZERO_TIME: Final = "0001-01-01T00:00:00Z"
"""How the Go worker's payload writes a timestamp the server did not send."""
BACKEND_NAME: Final = "command"
FORCED_CANCEL_TIMEOUT: Final = 3.0
"""The bound on a cancel command run after a forced stop (within ozw's own 5 s)."""
STDERR_TAIL_LINES: Final = 20
"""How many of a failed dispatch command's last stderr lines are logged as a warning."""
MAX_CAUSE_LINE: Final = 300
"""The stderr line quoted in a failure message is cut to this many characters."""


# --------------------------------------------------------------------------- rules


def payload_task(task: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """The task as the Go worker's payload always carries it: ``id``, ``title``,
    ``task_definition.prompt``, ``created_at`` and ``updated_at`` present (a missing or
    null one as Go's zero value: ``""``, the zero time), every other received field
    kept as it came."""
    shaped = dict(task)
    defaults = {"id": run_id, "title": "", "created_at": GO_ZERO_TIME, "updated_at": GO_ZERO_TIME}
    for key, default in defaults.items():
        if shaped.get(key) is None:
            shaped[key] = default
    definition = shaped.get("task_definition")
    definition = dict(definition) if isinstance(definition, Mapping) else {}
    if definition.get("prompt") is None:
        definition["prompt"] = ""
    shaped["task_definition"] = definition
    return shaped


def dispatch_payload(params: TaskParams, *, worker_id: str) -> dict[str, Any]:
    """The version-1 dispatch payload of a task, keys in the documented order, shaped
    like the Go worker's (a dispatch script written for it runs unchanged)."""
    return {
        "version": PAYLOAD_VERSION,
        "run_id": params.run_id,
        "execution_id": params.execution_id or "",
        "server_root_url": params.server_root_url or "",
        "worker_id": worker_id,
        "docker_image": params.image,
        "base_args": list(params.base_args),
        "env": dict(params.env),
        "sidecars": [
            {"image": s.image, "mount_path": s.mount_path, "read_write": s.read_write}
            for s in params.sidecars
        ],
        "task": payload_task(params.task, params.run_id),
    }


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """The payload as written to stdin: compact ASCII JSON and a final newline."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def cancel_variables(params: TaskParams) -> dict[str, str]:
    """The variables ozw forces on ``cancel_command``."""
    return {
        "OZ_RUN_ID": params.run_id,
        "OZ_EXECUTION_ID": params.execution_id or "",
        "OZ_WORKER_BACKEND": BACKEND_NAME,
    }


def dispatch_variables(params: TaskParams) -> dict[str, str]:
    """The five variables ozw forces on ``dispatch_command``."""
    return {
        **cancel_variables(params),
        "OZ_SERVER_ROOT_URL": params.server_root_url or "",
        "OZ_DOCKER_IMAGE": params.image,
    }


def command_environment(
    *,
    worker: Mapping[str, str],
    configured: Iterable[EnvEntry],
    forced: Mapping[str, str],
) -> dict[str, str]:
    """A command's environment: the worker's (stripped), the configured entries, then
    ``forced`` last so nothing overrides it. See the module docstring."""
    return layered_environment(
        inherited=inherited_environment(worker),
        configured=configured_environment(configured, worker),
        forced=forced,
    )


def last_line(lines: Iterable[str]) -> str | None:
    """The last non-blank line, trimmed and cut to :data:`MAX_CAUSE_LINE` characters."""
    found = None
    for line in lines:
        if line.strip():
            found = line.strip()
    if found is not None and len(found) > MAX_CAUSE_LINE:
        found = found[: MAX_CAUSE_LINE - 3] + "..."
    return found


def dispatch_failure_cause(result: ScriptResult) -> str:
    """``dispatch command exited with exit code N[: <last stderr line>]``."""
    cause = result.describe()
    line = last_line(result.stderr_tail)
    return cause if line is None else f"{cause}: {line}"


# ------------------------------------------------------------------------ backend


class CommandBackend(ProcessBackend):
    """Hands each task to ``dispatch_command`` (docs/protocol.md, "command").

    Args:
        config: the ``[backend.command]`` table.
        worker_id: written into every payload.
        environ: the worker's environment (default ``os.environ``), read at construction.
    """

    name: ClassVar[str] = BACKEND_NAME
    tasks_survive_shutdown: ClassVar[bool] = True

    def __init__(
        self,
        config: CommandConfig,
        *,
        worker_id: str,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(kill_grace=config.kill_grace, environ=environ)
        self.config = config
        self.worker_id = worker_id
        self._dispatching: dict[str, _InFlight] = {}
        self._forced = False

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
        in_flight = self._dispatching.get(params.task_id)
        if in_flight is not None:
            # The dispatch, its kill sequence, then its own cancel command and kill sequence.
            bound = 2 * (self.config.dispatch_timeout + 2 * self.config.kill_grace)
            with anyio.move_on_after(bound):
                await in_flight.done.wait()
            if in_flight.cancel_ran:
                return
        await self._run_cancel_command(params, log)

    async def _run_cancel_command(self, params: TaskParams, log: TaskLog) -> None:
        """``cancel_command`` once, bounded by ``dispatch_timeout``; its failure logged."""
        command = self.config.cancel_command
        if not command or not command.strip():
            log.info("no cancel_command configured: the dispatched work is left alone")
            return
        env = self._environment(cancel_variables(params))
        # After a forced stop (second Ctrl-C) the operator wants out now: the cancel
        # still runs, but briefly.
        timeout = (
            min(self.config.dispatch_timeout, FORCED_CANCEL_TIMEOUT)
            if self._forced
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
        still gets its cancel command, see the module docstring)."""
        self._forced = True
        for in_flight in self._dispatching.values():
            in_flight.killed = True
        self.runner.kill_all()

    # -- used by CommandTaskRun

    def _environment(self, forced: Mapping[str, str]) -> dict[str, str]:
        return command_environment(
            worker=self.environ, configured=self.config.environment, forced=forced
        )

    async def dispatch(self, params: TaskParams, log: TaskLog) -> None:
        """Run ``dispatch_command`` for a task. Raises TaskFailure unless it exits 0."""
        payload = encode_payload(dispatch_payload(params, worker_id=self.worker_id))
        env = self._environment(dispatch_variables(params))
        require_valid_environment(env, FailureReason.DISPATCH_COMMAND, "the dispatch command")
        in_flight = self._dispatching[params.task_id] = _InFlight()
        try:
            try:
                result = await run_script(
                    self.runner,
                    self.config.dispatch_command,
                    what="dispatch command",
                    label="dispatch",
                    log=log,
                    env=env,
                    timeout=self.config.dispatch_timeout,
                    stdin=payload,
                    stderr_lines=STDERR_TAIL_LINES,
                )
            except anyio.get_cancelled_exc_class():
                await self._cancel_stopped_dispatch(params, log, in_flight, "was stopped")
                raise
            if result.timed_out:
                await self._cancel_stopped_dispatch(params, log, in_flight, "timed out")
                raise result.failure(FailureReason.DISPATCH_TIMEOUT)
            if in_flight.killed and not result.ok:  # exit 0 beat the kill: a hand-off
                await self._cancel_stopped_dispatch(params, log, in_flight, "was killed")
        finally:
            if self._dispatching.get(params.task_id) is in_flight:
                del self._dispatching[params.task_id]
            in_flight.done.set()
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

    async def _cancel_stopped_dispatch(
        self, params: TaskParams, log: TaskLog, in_flight: _InFlight, how: str
    ) -> None:
        """Run ``cancel_command`` after a dispatch that did not end on its own: it may
        have submitted the work already. Shielded (the task's scope is often the one
        cancelled) and bounded by ``dispatch_timeout``; never raises for its failure."""
        if in_flight.cancel_ran:
            return
        in_flight.cancel_ran = True
        if self.config.cancel_command and self.config.cancel_command.strip():
            log.info(
                "the dispatch command %s; running cancel_command in case the work was submitted",
                how,
            )
        with anyio.CancelScope(shield=True):
            await self._run_cancel_command(params, log)


@attrs.define
class _InFlight:
    """A dispatch command still running, as :meth:`CommandBackend.cancel` sees it."""

    done: anyio.Event = attrs.field(factory=anyio.Event)
    killed: bool = False
    """:meth:`CommandBackend.kill_all` SIGKILLed it."""
    cancel_ran: bool = False
    """The dispatch ran (or is running) the cancel command itself."""


class CommandTaskRun(TaskRun):
    """One task of the command backend: nothing to set up, one dispatch, nothing to undo."""

    def __init__(self, backend: CommandBackend, params: TaskParams, log: TaskLog) -> None:
        super().__init__(params, log)
        self.backend = backend

    async def setup(self) -> None:
        """Nothing to prepare: the remote runtime does its own setup."""

    async def execute(self) -> ExecuteResult:
        """Dispatch the task; HANDED_OFF when the dispatch command exited 0."""
        await self.backend.dispatch(self.params, self.log)
        return ExecuteResult.HANDED_OFF

    async def teardown(self) -> None:
        """Nothing to undo: a handed-off task lives on; a failed dispatch left nothing here."""
