"""An in-test backend whose behaviour each task names in its env var ``BEHAVIOUR``.

Behaviours: ``ok``, ``fail:<exit code>``, ``setup-fail``, ``block`` (until cancelled),
``gate`` (until the test releases the task's gate), ``handoff``, ``crash``,
``slow-teardown`` (teardown blocks until the gate opens), ``teardown-fail`` (completes,
then its teardown raises).
"""

from __future__ import annotations

import collections

import trio

from ozw.backends.base import Backend, ExecuteResult, TaskRun
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog


class ScriptedRun(TaskRun):
    def __init__(self, backend: ScriptedBackend, params: TaskParams, log: TaskLog) -> None:
        self.backend = backend
        self.params = params
        self.log = log
        self.behaviour = params.env.get("BEHAVIOUR", "ok")

    async def setup(self) -> None:
        self.backend.record(("setup", self.params.task_id))
        if self.backend.on_setup is not None:
            self.backend.on_setup(self.params)
        if self.behaviour == "setup-fail":
            raise TaskFailure(FailureReason.WORKSPACE_SETUP, "setup exploded")

    async def execute(self) -> ExecuteResult:
        task_id = self.params.task_id
        self.backend.record(("execute", task_id))
        self.backend.started[task_id].set()
        kind, _, arg = self.behaviour.partition(":")
        match kind:
            case "fail":
                raise TaskFailure(FailureReason.AGENT_INVOCATION, "agent failed", int(arg))
            case "block":
                await trio.sleep_forever()
            case "gate" | "slow-teardown":
                if kind == "gate":
                    await self.backend.gates[task_id].wait()
            case "handoff":
                return ExecuteResult.HANDED_OFF
            case "crash":
                raise RuntimeError("boom")
        return ExecuteResult.COMPLETED

    async def teardown(self) -> None:
        self.backend.record(("teardown", self.params.task_id))
        if self.behaviour == "slow-teardown":
            await self.backend.gates[self.params.task_id].wait()
        self.backend.torn_down[self.params.task_id].set()
        if self.behaviour == "teardown-fail":
            raise RuntimeError("could not remove the workspace")


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.changed = trio.Event()
        self.started: collections.defaultdict[str, trio.Event] = collections.defaultdict(trio.Event)
        self.gates: collections.defaultdict[str, trio.Event] = collections.defaultdict(trio.Event)
        self.torn_down: collections.defaultdict[str, trio.Event] = collections.defaultdict(
            trio.Event
        )
        self.cancelled: list[str] = []
        self.killed = False
        self.closed = False
        self.on_setup: collections.abc.Callable[[TaskParams], None] | None = None

    def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
        return ScriptedRun(self, params, log)

    async def cancel(self, params: TaskParams) -> None:
        self.cancelled.append(params.task_id)

    async def kill_all(self) -> None:
        self.killed = True

    async def aclose(self) -> None:
        self.closed = True

    def record(self, call: tuple[str, str]) -> None:
        self.calls.append(call)
        self.changed.set()
        self.changed = trio.Event()

    async def calls_changed_to(self, call: tuple[str, str]) -> None:
        """Wait until ``call`` (e.g. ``("teardown", "t1")``) has happened."""
        while call not in self.calls:
            await self.changed.wait()

    def executions(self, task_id: str) -> int:
        return self.calls.count(("execute", task_id))
