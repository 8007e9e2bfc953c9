"""One task's lifecycle, without a connection: outcomes, teardown rules, deadlines."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio
import trio.testing

from ozw.backends.base import Backend, ExecuteResult, TaskRun
from ozw.tasks.failures import TASK_CANCELLED_MESSAGE, FailureReason, TaskFailure
from ozw.tasks.lifecycle import StopCause, TaskControl, TaskOutcome, run_task
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog
from ozw.wire.codec import TaskCompleted, TaskFailed
from tests.support.params import make_params


class OneRun(TaskRun):
    def __init__(self, backend: OneBackend) -> None:
        self.backend = backend

    async def setup(self) -> None:
        self.backend.log.append("setup")
        if self.backend.setup_error is not None:
            raise self.backend.setup_error

    async def execute(self) -> ExecuteResult:
        self.backend.log.append("execute")
        self.backend.executing.set()
        if self.backend.execute_error is not None:
            raise self.backend.execute_error
        if self.backend.block:
            await trio.sleep_forever()
        return ExecuteResult.COMPLETED

    async def teardown(self) -> None:
        self.backend.log.append("teardown")
        self.backend.tearing_down.set()
        if self.backend.teardown_hangs:
            await trio.sleep_forever()
        await trio.sleep(self.backend.teardown_takes)
        if self.backend.teardown_error is not None:
            raise self.backend.teardown_error
        self.backend.log.append("teardown done")


class OneBackend(Backend):
    name = "one"
    teardown_timeout = 5.0

    def __init__(self, *, teardown_hangs: bool = False, block: bool = False) -> None:
        self.log: list[str] = []
        self.executing = trio.Event()
        self.tearing_down = trio.Event()
        self.setup_error: BaseException | None = None
        self.execute_error: BaseException | None = None
        self.teardown_error: BaseException | None = None
        self.teardown_hangs = teardown_hangs
        self.teardown_takes = 0.0
        self.block = block
        self.run_class: type[OneRun] = OneRun

    def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
        return self.run_class(self)


def control() -> TaskControl:
    return TaskControl(make_params(), TaskLog("t1"))


async def run_acting(
    backend: OneBackend,
    task: TaskControl,
    when: trio.Event,
    act: Callable[[], Awaitable[None] | None],
) -> TaskOutcome:
    """Run ``task``, call ``act()`` (awaited when it is async) once ``when`` is set, and
    return the outcome."""
    results: list[TaskOutcome] = []

    async def run() -> None:
        results.append(await run_task(backend, task))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await when.wait()
        acting = act()
        if acting is not None:
            await acting
    return results[0]


async def stopped_while_executing(
    backend: OneBackend, task: TaskControl, stop: Callable[[], Awaitable[None] | None]
) -> TaskOutcome:
    """Run ``task`` with its agent blocked in execute, call ``stop()`` there."""
    backend.block = True
    return await run_acting(backend, task, backend.executing, stop)


async def test_success_completes_and_tears_down() -> None:
    backend = OneBackend()
    outcome = await run_task(backend, control())
    assert outcome.message == TaskCompleted("t1", "Task completed successfully")
    assert backend.log == ["setup", "execute", "teardown", "teardown done"]
    assert not outcome.teardown_failed


async def test_the_result_is_reported_after_teardown_by_default() -> None:
    backend = OneBackend()
    outcome = await run_task(
        backend, control(), report=lambda o: backend.log.append(f"report {o.result}")
    )
    assert backend.log == ["setup", "execute", "teardown", "teardown done", "report completed"]
    assert outcome.result == "completed"


class ReleasingRun(OneRun):
    teardown_after_report = True


async def test_a_teardown_that_only_releases_runs_after_the_report() -> None:
    backend = OneBackend()
    backend.run_class = ReleasingRun
    backend.teardown_error = RuntimeError("rm -f failed")
    outcome = await run_task(
        backend, control(), report=lambda o: backend.log.append(f"report {o.result}")
    )
    assert backend.log == ["setup", "execute", "report completed", "teardown"]
    # Known only after the report, and still in the returned outcome (metrics, log).
    assert outcome.teardown_failed


async def test_a_failed_setup_is_reported_once_when_teardown_follows_the_report() -> None:
    backend = OneBackend()
    backend.run_class = ReleasingRun
    backend.setup_error = TaskFailure(FailureReason.IMAGE_PULL, "no such image")
    reports: list[str] = []
    outcome = await run_task(backend, control(), report=lambda o: reports.append(o.result))
    assert reports == ["failed"]
    assert outcome.reason is FailureReason.IMAGE_PULL
    assert backend.log == ["setup", "teardown", "teardown done"]


async def test_setup_failure_is_reported_and_teardown_still_runs() -> None:
    backend = OneBackend()
    backend.setup_error = TaskFailure(FailureReason.WORKSPACE_SETUP, "bad task id")
    outcome = await run_task(backend, control())
    assert outcome.message == TaskFailed(
        "t1", "Failed to execute task: bad task id", "workspace_setup", None
    )
    assert outcome.phase == "setup"
    assert backend.log == ["setup", "teardown", "teardown done"]


async def test_teardown_failure_never_changes_the_result() -> None:
    backend = OneBackend()
    backend.teardown_error = RuntimeError("cleanup script exploded")
    outcome = await run_task(backend, control())
    assert (outcome.result, outcome.teardown_failed) == ("completed", True)


async def test_a_failure_wrapped_in_an_exception_group_is_still_classified() -> None:
    backend = OneBackend()
    backend.execute_error = ExceptionGroup(
        "from a task group", [TaskFailure(FailureReason.CONTAINER_EXIT, "exit 2", 2)]
    )
    outcome = await run_task(backend, control())
    assert outcome.message == TaskFailed(
        "t1", "Failed to execute task: exit 2", "container_exit", 2
    )


async def test_unexpected_error_is_unknown_with_a_message_not_a_traceback() -> None:
    backend = OneBackend()
    backend.execute_error = KeyError("surprise")
    outcome = await run_task(backend, control())
    assert isinstance(outcome.message, TaskFailed)
    assert outcome.message.failure_reason == "unknown"
    assert "Traceback" not in outcome.message.message
    assert backend.log[-1] == "teardown done"


async def test_shutdown_stop_reports_graceful_shutdown_with_an_observed_exit_code() -> None:
    backend = OneBackend()
    backend.execute_error = TaskFailure(FailureReason.AGENT_INVOCATION, "agent died", 143)
    task = control()
    task.stop(StopCause.SHUTDOWN)  # stopped before the backend's failure arrives
    outcome = await run_task(backend, task)
    assert outcome.message == TaskFailed(
        "t1", "Failed to execute task: the worker is shutting down", "graceful_shutdown", 143
    )


async def test_server_cancel_mid_execute_reports_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = OneBackend()
    task = control()
    outcome = await stopped_while_executing(backend, task, lambda: task.stop(StopCause.SERVER))
    assert outcome.message == TaskCompleted("t1", "Task cancelled by user request.", "CANCELLED")
    assert backend.log[-1] == "teardown done"


async def test_a_stop_the_worker_cannot_attribute_is_task_cancelled() -> None:
    backend = OneBackend()
    task = control()
    # Not the server, not a timeout, not our shutdown:
    outcome = await stopped_while_executing(backend, task, task.scope.cancel)
    assert outcome.message == TaskFailed("t1", TASK_CANCELLED_MESSAGE, "task_cancelled", None)
    assert outcome.cause == "the task was stopped for no known cause"
    assert backend.log[-1] == "teardown done"


async def test_a_backend_reported_cancellation_carries_go_s_message() -> None:
    backend = OneBackend()
    backend.execute_error = TaskFailure(FailureReason.TASK_CANCELLED, "the Job was deleted")
    outcome = await run_task(backend, control())
    assert outcome.message == TaskFailed("t1", TASK_CANCELLED_MESSAGE, "task_cancelled", None)
    assert TASK_CANCELLED_MESSAGE.startswith("The task was interrupted due to an infrastructure")
    assert outcome.cause == "the Job was deleted"


async def test_task_timeout(autojump_clock: trio.testing.MockClock) -> None:
    backend = OneBackend(block=True)
    start = trio.current_time()
    outcome = await run_task(backend, control(), task_timeout=90)
    assert trio.current_time() - start == 90
    assert outcome.message == TaskFailed(
        "t1", "Failed to execute task: task timed out after 90s", "task_timeout", None
    )


async def test_hanging_teardown_is_bounded_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = OneBackend(teardown_hangs=True)
    start = trio.current_time()
    outcome = await run_task(backend, control())
    # The backend's teardown deadline plus the lifecycle's margin.
    assert trio.current_time() - start == backend.teardown_timeout + 15
    assert (outcome.result, outcome.teardown_failed) == ("completed", True)


async def test_teardown_runs_even_when_the_surrounding_scope_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = OneBackend(block=True)
    task = control()
    with trio.CancelScope() as outer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_task, backend, task)
            await backend.executing.wait()
            outer.cancel()  # e.g. a crash elsewhere unwinding the whole tree
    assert backend.log[-2:] == ["teardown", "teardown done"]


async def test_forced_stop_cancels_a_hanging_teardown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = OneBackend(teardown_hangs=True)
    task = control()

    async def force() -> None:
        task.stop(StopCause.SHUTDOWN)
        await backend.tearing_down.wait()
        task.force_stop()

    outcome = await stopped_while_executing(backend, task, force)
    assert trio.current_time() < 1
    assert outcome.teardown_failed
    assert isinstance(outcome.message, TaskFailed)
    assert outcome.message.failure_reason == "graceful_shutdown"


async def test_a_backend_that_cannot_open_the_task_fails_it_without_teardown() -> None:
    class Broken(OneBackend):
        def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
            raise RuntimeError("no room")

    backend = Broken()
    outcome = await run_task(backend, control())
    assert isinstance(outcome.message, TaskFailed)
    assert outcome.message.failure_reason == "unknown"
    assert backend.log == []


async def test_an_assignment_out_of_range_fails_before_any_backend_work() -> None:
    class Untouchable(OneBackend):
        def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
            raise AssertionError("bad input never reaches a backend")

    refusal = TaskFailure(FailureReason.SIDECAR_PREP, "the assignment is not valid: ...")
    refused = TaskControl(attrs.evolve(make_params(), refusal=refusal), TaskLog("t1"))
    outcome = await run_task(Untouchable(), refused)
    assert outcome.message == TaskFailed(
        "t1", "Failed to execute task: the assignment is not valid: ...", "sidecar_prep"
    )


class ConvertsCancellation(OneRun):
    """A backend that reports its own cancellation as a failure (some do)."""

    async def execute(self) -> ExecuteResult:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise TaskFailure(FailureReason.AGENT_INVOCATION, "agent killed", 143) from None
        raise AssertionError("unreachable")


async def test_a_deadline_turned_into_a_failure_by_the_backend_is_still_a_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Converting(OneBackend):
        def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
            return ConvertsCancellation(self)

    outcome = await run_task(Converting(), control(), task_timeout=30)
    assert isinstance(outcome.message, TaskFailed)
    assert outcome.message.failure_reason == "task_timeout"


# A task that ends without a stop tears down in its own cancel scope, now shielded and
# bounded by the teardown's deadline (one scope per task): the same rules hold there.


async def test_a_completed_tasks_teardown_survives_the_surrounding_scope_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = OneBackend()
    backend.teardown_takes = 5
    outcomes: list[TaskOutcome] = []

    async def run() -> None:
        outcomes.append(await run_task(backend, control()))

    with trio.CancelScope() as outer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await backend.tearing_down.wait()
            outer.cancel()
    assert backend.log[-1] == "teardown done"
    assert outcomes[0].result == "completed"
    assert not outcomes[0].teardown_failed


async def test_a_stop_during_a_completed_tasks_teardown_neither_cuts_nor_changes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = OneBackend()
    backend.teardown_takes = 5
    task = control()
    outcome = await run_acting(
        backend, task, backend.tearing_down, lambda: task.stop(StopCause.SERVER)
    )
    assert backend.log[-1] == "teardown done"
    assert outcome.message == TaskCompleted("t1", "Task completed successfully")
    assert not outcome.teardown_failed


async def test_the_task_deadline_does_not_bound_a_completed_tasks_teardown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = OneBackend()
    backend.teardown_takes = 15  # within its own deadline (5 s + 15 s margin)
    start = trio.current_time()
    outcome = await run_task(backend, control(), task_timeout=10)
    assert trio.current_time() - start == 15
    assert outcome.result == "completed"
    assert not outcome.teardown_failed


async def test_a_forced_stop_cancels_a_completed_tasks_hanging_teardown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = OneBackend(teardown_hangs=True)
    task = control()
    outcome = await run_acting(backend, task, backend.tearing_down, task.force_stop)
    assert trio.current_time() < 1
    assert (outcome.result, outcome.teardown_failed) == ("completed", True)


async def test_a_forced_stop_before_teardown_cancels_the_teardown_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = OneBackend(teardown_hangs=True)
    task = control()
    outcome = await stopped_while_executing(backend, task, task.force_stop)
    assert trio.current_time() < 1
    assert backend.log[-1] == "teardown"
    assert outcome.teardown_failed
    assert isinstance(outcome.message, TaskFailed)
    assert outcome.message.failure_reason == "graceful_shutdown"
