"""The supervisor: takes assignments, enforces concurrency, runs and reports tasks.

A task id names a run; each assignment of it is an execution (docs/protocol.md).
Every execution runs in its own child of the supervisor's nursery. Slots are a
plain dict of active executions keyed by ``(task_id, execution_id)``: one is added
before its claim is queued and removed in one ``finally``, so a slot is released
exactly once whatever happens. The executions of one run form a chain: a follow-up
is claimed at once and starts when the one before it on this worker has ended,
teardown included.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Final, TypeVar

import attrs
import trio

from ozw.backends.base import Backend
from ozw.link.outbox import Outbox
from ozw.tasks.lifecycle import StopCause, TaskControl, TaskOutcome, TaskPhase, TaskResult, run_task
from ozw.tasks.params import ParamSettings, TaskParams, build_task_params
from ozw.telemetry.logs import TaskLog
from ozw.telemetry.tracing import NO_TRACER, TaskTrace, WorkerTracer
from ozw.wire.codec import (
    REJECT_AT_CAPACITY,
    REJECT_SHUTTING_DOWN,
    ServerMessage,
    TaskAssignment,
    TaskCancellation,
    TaskClaimed,
    TaskRejected,
    UnknownMessage,
)

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

MAX_REMEMBERED = 10_000
"""Hand-offs (for a later cancellation) and finished executions (to answer a repeat)
remembered; the oldest are forgotten beyond this."""

ExecutionKey = tuple[str, str]
"""``(task_id, execution_id)``; an assignment without an execution id has ``""``."""


def execution_key(params: TaskParams) -> ExecutionKey:
    return params.task_id, params.execution_id or ""


@attrs.frozen
class SupervisorSettings:
    worker_id: str
    params: ParamSettings
    max_concurrent_tasks: int = 0
    task_timeout: float | None = None
    max_tasks: int | None = None
    """Claim no more than this many tasks in the worker's life (one-shot workers)."""


@attrs.define
class TaskEvents:
    """Hooks for observers (metrics, the demo's live view, tests)."""

    on_claimed: list[Callable[[TaskParams], None]] = attrs.field(factory=list)
    on_rejected: list[Callable[[str, str], None]] = attrs.field(factory=list)
    on_reported: list[Callable[[TaskParams, TaskOutcome], None]] = attrs.field(factory=list)
    """The terminal message was queued (teardown may still run: the slot is held)."""
    on_finished: list[Callable[[TaskParams, TaskOutcome, float], None]] = attrs.field(factory=list)


class Supervisor:
    """Owns the running tasks of one worker."""

    def __init__(self, settings: SupervisorSettings, backend: Backend, outbox: Outbox) -> None:
        self.settings = settings
        self.backend = backend
        self.outbox = outbox
        self.events = TaskEvents()
        self.tracer: WorkerTracer = NO_TRACER
        self.active: dict[ExecutionKey, TaskControl] = {}
        """Claimed executions not yet ended: running, or waiting for their run's previous."""
        self.handed_off: dict[str, TaskParams] = {}
        self.ended: dict[ExecutionKey, None] = {}
        """Executions that ran to their end here, oldest first (an ordered set)."""
        self._last_of_run: dict[str, TaskControl] = {}
        self.finished = 0
        self.claimed = 0
        self.accepting = True
        self._nursery: trio.Nursery | None = None
        self._idle = trio.Event()
        self._idle.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the tasks' nursery until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # --- messages from the server ------------------------------------------------

    def handle(self, message: ServerMessage) -> None:
        """Act on one server message; never blocks, never raises."""
        match message:
            case TaskAssignment():
                self._assign(message)
            case TaskCancellation():
                self._cancel(message.task_id)
            case UnknownMessage(type=kind):
                log.info("ignored a message of unknown type %r", kind)

    def _assign(self, assignment: TaskAssignment) -> None:
        task_id = assignment.task_id
        key = (task_id, assignment.execution_id or "")
        tlog = TaskLog(task_id, execution_id=assignment.execution_id)
        if key in self.active or key in self.ended:
            # A repeat (the server re-sent it): the execution is ours and runs once.
            tlog.info(
                "execution already claimed here: claimed again, not run again",
                extra={"event": "claimed_again"},
            )
            self.outbox.put(TaskClaimed(task_id, self.settings.worker_id))
            return
        trace = self.tracer.assigned(assignment)
        if not self.accepting:
            tlog.info("rejected: %s", REJECT_SHUTTING_DOWN, extra=_rejected(REJECT_SHUTTING_DOWN))
            self._reject(task_id, REJECT_SHUTTING_DOWN, trace)
            return
        limit = self.settings.max_concurrent_tasks
        if limit and len(self.active) >= limit:
            tlog.info(
                "rejected: %s (%d running)",
                REJECT_AT_CAPACITY,
                len(self.active),
                extra=_rejected(REJECT_AT_CAPACITY),
            )
            self._reject(task_id, REJECT_AT_CAPACITY, trace)
            return
        with trace.phase("claim"):
            params = build_task_params(assignment, self.settings.params)
            self.outbox.put(TaskClaimed(task_id, self.settings.worker_id))
        trace.event("task.claimed")
        if params.image_warning is not None:
            tlog.warning("%s", params.image_warning)
        previous = self._last_of_run.get(task_id)
        control = TaskControl(params, tlog, after=previous.ended if previous else None, trace=trace)
        self.active[key] = control
        self._last_of_run[task_id] = control
        self.claimed += 1
        if self.settings.max_tasks is not None and self.claimed >= self.settings.max_tasks:
            # A one-shot worker takes nothing more: later assignments are re-queued.
            self.accepting = False
        self.handed_off.pop(task_id, None)
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        execution = params.execution_id or "-"
        if previous is None:
            tlog.info("claimed (execution %s)", execution, extra=CLAIMED_EVENT)
        else:
            tlog.info(
                "claimed (execution %s); starts when execution %s of this run has ended",
                execution,
                previous.params.execution_id or "-",
                extra=CLAIMED_EVENT,
            )
        assert self._nursery is not None, "Supervisor.run must be started first"
        self._nursery.start_soon(self._run_task, control, name=f"task {task_id}")
        for claimed in self.events.on_claimed:
            _notify(claimed, params)

    def adopt(self, params: TaskParams) -> None:
        """Take over a task an earlier run of this worker started and that outlived it
        (a Kubernetes Job): it occupies a slot and is reported like any task, without a
        second claim."""
        key = execution_key(params)
        if key in self.active:
            return
        control = TaskControl(
            params,
            TaskLog(params.task_id, execution_id=params.execution_id),
            trace=self.tracer.reattached(params),
        )
        self.active[key] = control
        self._last_of_run[params.task_id] = control
        tlog = control.log
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        tlog.info("reattached (execution %s)", params.execution_id or "-")
        assert self._nursery is not None, "Supervisor.run must be started first"
        self._nursery.start_soon(self._run_task, control, name=f"task {params.task_id}")
        for claimed in self.events.on_claimed:
            _notify(claimed, params)

    def _reject(self, task_id: str, reason: str, trace: TaskTrace) -> None:
        self.outbox.put(TaskRejected(task_id, reason))
        trace.reject(reason)
        for rejected in self.events.on_rejected:
            _notify(rejected, task_id, reason)

    def _cancel(self, task_id: str) -> None:
        """Cancel every execution of the run here: running, waiting or handed off."""
        controls = [control for (run, _), control in self.active.items() if run == task_id]
        for control in controls:
            control.log.info("cancellation requested by the server (phase %s)", control.phase)
            control.trace.event(
                "task.cancellation_requested", {"source": "server", "task.id": task_id}
            )
            control.stop(StopCause.SERVER)
            if control.phase is not TaskPhase.PENDING:
                self._spawn_backend_cancel(control.params, control.log)
        params = self.handed_off.pop(task_id, None)
        if params is not None:
            tlog = TaskLog(task_id, execution_id=params.execution_id)
            tlog.info("cancellation requested for a handed-off task")
            self._spawn_backend_cancel(params, tlog)
        elif not controls:
            TaskLog(task_id).info("cancellation for a task not active here: ignored")

    def _spawn_backend_cancel(self, params: TaskParams, tlog: TaskLog) -> None:
        async def cancel() -> None:
            try:
                await self.backend.cancel(params)
            except Exception as exc:
                tlog.warning("backend cancel failed: %s", exc)

        assert self._nursery is not None
        self._nursery.start_soon(cancel)

    # --- one task -----------------------------------------------------------------

    async def _run_task(self, control: TaskControl) -> None:
        params = control.params
        key = execution_key(params)
        try:
            outcome = await run_task(
                self.backend,
                control,
                task_timeout=self.settings.task_timeout,
                report=functools.partial(self._report, control),
            )
        finally:
            del self.active[key]
            if self._last_of_run.get(params.task_id) is control:
                del self._last_of_run[params.task_id]
            _remember(self.ended, key, None)
            control.ended.set()
            if not self.active:
                self._idle.set()
        duration = trio.current_time() - control.started_at
        fields = {
            "event": "finished",
            "result": outcome.result.value,
            "reason": outcome.reason.value if outcome.reason is not None else None,
            "exit_code": outcome.exit_code,
            "duration_s": round(duration, 3),
        }
        if outcome.result is TaskResult.DETACHED:
            control.log.info(
                "left running for the next start to reattach (%.1fs)", duration, extra=fields
            )
        elif outcome.message is None:
            _remember(self.handed_off, params.task_id, params)
            control.log.info("handed off (%.1fs)", duration, extra=fields)
        else:
            # The same cause the server gets, so the worker's own log says why.
            cause = f": {outcome.cause}" if outcome.cause else ""
            level = logging.WARNING if outcome.result is TaskResult.FAILED else logging.INFO
            summary = _summary(outcome, duration)
            control.log.log(level, "%s %s%s", outcome.result, summary, cause, extra=fields)
        self.finished += 1
        control.trace.finish(outcome)
        for finished in self.events.on_finished:
            _notify(finished, params, outcome, duration)

    def _report(self, control: TaskControl, outcome: TaskOutcome) -> None:
        """Queue the terminal message (hand-offs and detached tasks have none)."""
        if outcome.message is None:
            return
        with control.trace.phase("report"):
            self.outbox.put(outcome.message)
        for reported in self.events.on_reported:
            _notify(reported, control.params, outcome)

    # --- shutdown -----------------------------------------------------------------

    def stop_accepting(self) -> None:
        self.accepting = False

    def cancel_all(self) -> int:
        """Cancel every running task for shutdown (unless the backend's tasks survive it)."""
        if self.backend.tasks_survive_shutdown:
            return 0
        for control in self.active.values():
            control.stop(StopCause.SHUTDOWN)
        return len(self.active)

    def force_stop(self) -> None:
        """Stop waiting: cancel every task and its teardown now."""
        for control in self.active.values():
            control.force_stop()

    async def wait_idle(self) -> None:
        """Wait until no task is running."""
        await self._idle.wait()


CLAIMED_EVENT: Final = {"event": "claimed"}


def _rejected(reason: str) -> dict[str, str]:
    return {"event": "rejected", "reason": reason}


def _remember(memory: dict[K, V], key: K, value: V) -> None:
    """Add ``key`` to a bounded memory; dicts keep insertion order, so the first key
    is the oldest and goes first."""
    memory.pop(key, None)
    memory[key] = value
    if len(memory) > MAX_REMEMBERED:
        del memory[next(iter(memory))]


def _notify(hook: Callable[..., None], *args: object) -> None:
    """Call an observer; its failure is logged and never reaches the tasks."""
    try:
        hook(*args)
    except Exception:
        log.exception("an observer of task events failed")


def _summary(outcome: TaskOutcome, duration: float) -> str:
    parts = []
    if outcome.reason is not None:
        parts.append(outcome.reason.value)
    if outcome.exit_code is not None:
        parts.append(f"exit code {outcome.exit_code}")
    parts.append(f"{duration:.1f}s")
    return "(" + ", ".join(parts) + ")"
