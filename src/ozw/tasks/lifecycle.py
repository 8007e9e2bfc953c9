"""One task's life: setup → execute → teardown, and the message it ends with.

Setup and execute run inside the task's cancel scope (a server cancellation, the
worker's shutdown or the optional ``task_timeout`` cancel it). Teardown runs once
setup has started, whatever happened, in a shielded scope with its own deadline;
only a hard stop (second Ctrl-C) cancels it. A teardown's failure is logged and
counted and never changes the task's result, so a run whose teardown only releases
resources (:attr:`~ozw.backends.base.TaskRun.teardown_after_report`) has its result
reported before teardown starts: the server hears it without waiting for a
container's removal.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs
import trio

from ozw.backends.base import Backend, ExecuteResult, TaskRun
from ozw.exception_groups import leaves
from ozw.tasks.deadlines import TEARDOWN_MARGIN
from ozw.tasks.failures import TASK_CANCELLED_MESSAGE, FailureReason, TaskFailure, failure_message
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog
from ozw.telemetry.tracing import NO_TRACE, TaskTrace
from ozw.wire.codec import TASK_STATE_CANCELLED, TaskCompleted, TaskFailed, TerminalMessage

COMPLETED_MESSAGE = "Task completed successfully"
CANCELLED_MESSAGE = "Task cancelled by user request."


class StopCause(enum.StrEnum):
    """Why the worker cancelled a task's scope."""

    SERVER = "server"
    SHUTDOWN = "shutdown"
    TIMEOUT = "timeout"


class TaskPhase(enum.StrEnum):
    """Where a task is in its life."""

    PENDING = "pending"
    SETUP = "setup"
    EXECUTE = "execute"
    TEARDOWN = "teardown"


class TaskResult(enum.StrEnum):
    """How a task ended, as the worker sees it."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    HANDED_OFF = "handed_off"
    DETACHED = "detached"
    """Stopped by the worker's shutdown but left running for the next start to reattach."""


@attrs.define
class TaskControl:
    """The handles the supervisor holds on a running task."""

    params: TaskParams
    log: TaskLog
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    cause: StopCause | None = None
    phase: TaskPhase = TaskPhase.PENDING
    started_at: float = attrs.field(factory=trio.current_time)
    """When it was claimed: its duration counts from here."""
    after: trio.Event | None = None
    """Set when the previous execution of the same run has ended here; start after it."""
    ended: trio.Event = attrs.field(factory=trio.Event)
    """Set by the supervisor once this execution has ended, teardown included."""
    teardown_scope: trio.CancelScope | None = None
    """The scope teardown runs in, once it has started (see :func:`run_task`)."""
    forced: bool = False
    """A hard stop: teardown is cancelled too, also one that has not started yet."""
    trace: TaskTrace = NO_TRACE
    """Its spans (a no-op unless OTEL_TRACES_EXPORTER is set)."""

    def stop(self, cause: StopCause) -> None:
        """Cancel the task (the first cause wins); a teardown already running goes on."""
        if self.cause is None:
            self.cause = cause
        self.scope.cancel()

    def force_stop(self) -> None:
        """Stop the task and its teardown now."""
        self.stop(StopCause.SHUTDOWN)
        self.forced = True
        if self.teardown_scope is not None:
            self.teardown_scope.cancel()


@attrs.frozen
class TaskOutcome:
    """How a task ended: the terminal message (None for a hand-off) and a summary."""

    message: TerminalMessage | None
    result: TaskResult
    reason: FailureReason | None = None
    exit_code: int | None = None
    teardown_failed: bool = False
    phase: TaskPhase = TaskPhase.EXECUTE
    """The phase the task was in when it ended (pending, setup, execute)."""
    cause: str | None = None
    """Why it failed, for the worker's log (the server's message says the same)."""

    @property
    def failure_phase(self) -> str:
        """The metrics' and spans' phase of a failure: before the backend took the task
        (a waiting execution) the assignment's, otherwise the backend's."""
        return "assignment" if self.phase is TaskPhase.PENDING else "backend"


def completed(task_id: str) -> TaskOutcome:
    return TaskOutcome(TaskCompleted(task_id, COMPLETED_MESSAGE), TaskResult.COMPLETED)


def cancelled(task_id: str) -> TaskOutcome:
    return TaskOutcome(
        TaskCompleted(task_id, CANCELLED_MESSAGE, task_state=TASK_STATE_CANCELLED),
        TaskResult.CANCELLED,
    )


def failed(
    task_id: str, reason: FailureReason, cause: str, exit_code: int | None = None
) -> TaskOutcome:
    text = (
        TASK_CANCELLED_MESSAGE if reason is FailureReason.TASK_CANCELLED else failure_message(cause)
    )
    message = TaskFailed(task_id, text, reason.value, exit_code)
    return TaskOutcome(message, TaskResult.FAILED, reason, exit_code, cause=cause)


def _outcome_of_stop(
    control: TaskControl,
    task_timeout: float | None,
    exit_code: int | None = None,
    *,
    reattaches: bool = False,
) -> TaskOutcome:
    """The outcome of a task the worker stopped; ``exit_code`` when the agent's was seen.

    A shutdown of a backend that ``reattaches`` reports nothing: the task lives on and
    the worker's next start adopts it.
    """
    task_id = control.params.task_id
    match control.cause:
        case StopCause.SERVER:
            return cancelled(task_id)
        case StopCause.SHUTDOWN if reattaches:
            return TaskOutcome(None, TaskResult.DETACHED)
        case StopCause.SHUTDOWN:
            return failed(
                task_id, FailureReason.GRACEFUL_SHUTDOWN, "the worker is shutting down", exit_code
            )
        case StopCause.TIMEOUT:
            return failed(
                task_id, FailureReason.TASK_TIMEOUT, f"task timed out after {task_timeout:g}s"
            )
    # Stopped, and not by the server, a timeout or our shutdown (docs/protocol.md).
    return failed(task_id, FailureReason.TASK_CANCELLED, "the task was stopped for no known cause")


async def run_task(
    backend: Backend,
    control: TaskControl,
    *,
    task_timeout: float | None = None,
    report: Callable[[TaskOutcome], None] | None = None,
) -> TaskOutcome:
    """Run one task to its end and return its outcome; never raises for task failures.

    ``report`` gets the outcome once, as soon as its terminal message may go: after
    teardown, or before it when the run's teardown only releases resources. The
    returned outcome also says whether teardown failed.
    """
    params, log = control.params, control.log
    outcome: TaskOutcome | None = None
    reported = False
    setup_started = False
    teardown_failed = False
    try:
        if params.refusal is not None:
            raise params.refusal  # bad input (tasks/ranges.py): no backend work at all
        run = backend.open_task(params, log)
        with control.scope:
            if control.after is not None:
                await control.after.wait()
                log.info("previous execution of this run ended: starting")
            if task_timeout is not None:
                # The task's own deadline (see _timed_out).
                control.scope.deadline = trio.current_time() + task_timeout
            control.phase = TaskPhase.SETUP
            setup_started = True
            log.info("setup started", extra={"event": "setup_started"})
            control.trace.event("task.started")
            began = trio.current_time()
            with control.trace.phase("setup"):
                await run.setup()
            log.debug("setup done (%.2fs)", trio.current_time() - began)
            control.phase = TaskPhase.EXECUTE
            log.info("agent started", extra={"event": "agent_started"})
            began = trio.current_time()
            control.trace.event(
                "backend.started", {"backend": backend.name, "docker.image": params.image}
            )
            with control.trace.phase("execute"):
                result = await run.execute()
            log.debug("agent ended (%.2fs)", trio.current_time() - began)
            if result is ExecuteResult.HANDED_OFF:
                outcome = TaskOutcome(None, TaskResult.HANDED_OFF)
            else:
                outcome = completed(params.task_id)
        if control.scope.cancelled_caught and _timed_out(control):
            control.cause = StopCause.TIMEOUT
        if control.scope.cancelled_caught or outcome is None:
            outcome = _outcome_of_stop(control, task_timeout, reattaches=backend.reattaches)
        outcome = attrs.evolve(outcome, phase=control.phase)
    except Exception as exc:
        if control.scope.cancel_called and _timed_out(control):
            control.cause = StopCause.TIMEOUT
        # The classified failure, also when a backend's task group wrapped it.
        failure = next((leaf for leaf in leaves(exc) if isinstance(leaf, TaskFailure)), None)
        if failure is None:
            log.exception("unexpected error in %s: %s", control.phase, exc)
            outcome = failed(params.task_id, FailureReason.UNKNOWN, f"internal error: {exc}")
        elif control.cause is not None or control.scope.cancel_called:
            # A backend that turned our own stop (or deadline) into a failure: the stop
            # is the truth.
            outcome = _outcome_of_stop(
                control, task_timeout, failure.exit_code, reattaches=backend.reattaches
            )
        else:
            outcome = failed(params.task_id, failure.reason, failure.cause, failure.exit_code)
        outcome = attrs.evolve(outcome, phase=control.phase)
    finally:
        if setup_started:
            reported = _report_before_teardown(run, outcome, report)
            teardown_failed = not await _teardown(backend, run, control)
    assert outcome is not None, "every way out of the task sets its outcome"
    if report is not None and not reported:
        report(outcome)
    if teardown_failed:
        outcome = attrs.evolve(outcome, teardown_failed=True)
    return outcome


def _report_before_teardown(
    run: TaskRun, outcome: TaskOutcome | None, report: Callable[[TaskOutcome], None] | None
) -> bool:
    """Report now when the run's teardown only releases resources; True if reported."""
    if report is None or outcome is None or not run.teardown_after_report:
        return False
    report(outcome)
    return True


def _timed_out(control: TaskControl) -> bool:
    """A cancel that is the task's deadline: no stop gave it a cause, and it passed."""
    return control.cause is None and trio.current_time() >= control.scope.deadline


async def _teardown(backend: Backend, run: TaskRun, control: TaskControl) -> bool:
    """Run the backend's teardown, shielded and bounded; True when it succeeded."""
    control.phase = TaskPhase.TEARDOWN
    log = control.log
    began = trio.current_time()
    deadline = began + backend.teardown_timeout + TEARDOWN_MARGIN
    with trio.CancelScope(shield=True, deadline=deadline) as scope:
        control.teardown_scope = scope
        if control.forced:
            scope.cancel()
        try:
            with control.trace.phase("teardown"):
                await run.teardown()
        except Exception as exc:
            log.warning("teardown failed: %s", exc)
            return False
    if scope.cancelled_caught:
        log.warning("teardown did not finish (stopped after its deadline or by a forced stop)")
        return False
    log.debug("teardown done (%.2fs)", trio.current_time() - began)
    return True
