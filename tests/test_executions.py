"""Executions of one run (docs/protocol.md) through a real WebSocket server and real agents.

The worker runs the stand-in ``oz`` on the direct backend. An agent that must keep
running until the test says so reads its steps from a FIFO (``OZ_STANDIN_SCRIPT``):
it blocks until the test writes them, so nothing here depends on timing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import trio

from ozw.backends.direct import DirectBackend
from ozw.config import DirectConfig
from ozw.wire.codec import (
    REJECT_AT_CAPACITY,
    Task,
    TaskAssignment,
    TaskCancellation,
    TaskClaimed,
    TaskCompleted,
    TaskRejected,
    WorkerMessage,
)
from tests.support.log_lines import Lines
from tests.support.worker import running_worker, terminal_for

AGENT = Path(__file__).resolve().parents[1] / "examples" / "agent" / "oz"
COMPLETED = TaskCompleted("run-1", "Task completed successfully")
CLAIMED = TaskClaimed("run-1", "w1")


def direct_backend(tmp_path: Path, *, cleanup: bool = True) -> DirectBackend:
    environ = {
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        # The stand-in's `#!/usr/bin/env python3` must find a python.
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"]),
    }
    config = DirectConfig(workspace_root=str(tmp_path / "ws"), oz_path=str(AGENT), kill_grace=0.5)
    return DirectBackend(config, cleanup=cleanup, environ=environ)


def execution(task_id: str, execution_id: str, **env: str) -> TaskAssignment:
    return TaskAssignment(task_id, Task(id=task_id), execution_id=execution_id, env_vars=env)


class Gate:
    """A FIFO an agent reads its steps from: the agent runs until :meth:`open`."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path

    async def open(self, steps: str = "echo released") -> None:
        # Opening for writing waits for the agent to open it for reading.
        await trio.Path(self.path).write_text(steps)


def records_of(lines: Lines, task_id: str) -> list[tuple[str | None, str]]:
    """``(execution_id, message)`` of the task's own lifecycle lines, in order."""
    return [
        (getattr(r, "execution_id", None), r.getMessage())
        for r in lines.records
        if getattr(r, "task_id", None) == task_id and getattr(r, "stream", None) is None
    ]


def terminals(messages: list[WorkerMessage]) -> list[WorkerMessage]:
    return [m for m in messages if not isinstance(m, TaskClaimed)]


async def test_a_repeated_execution_is_claimed_again_and_runs_once(
    tmp_path: Path, lines: Lines
) -> None:
    pidfile = tmp_path / "pids"
    first = execution(
        "run-1", "exec-1", OZ_STANDIN_PROMPT="echo ran", OZ_STANDIN_PIDFILE=str(pidfile)
    )
    async with running_worker(direct_backend(tmp_path)) as local:
        server = local.server
        with trio.fail_after(30):
            await server.send(first)
            await server.send(first)  # while it is claimed here
            await server.wait_for(terminal_for("run-1"))
            await server.send(first)  # after it ended here
            # A later task proves the worker has read (and answered) the repeat.
            await server.send(execution("other", "exec-9"))
            await server.wait_for(terminal_for("other"))
        assert server.messages_for("run-1") == [CLAIMED, CLAIMED, COMPLETED, CLAIMED]
    assert len(pidfile.read_text().split()) == 1  # one agent ever ran
    assert lines.output("run-1", "agent stdout") == ["ran"]


async def test_a_follow_up_is_claimed_at_once_and_starts_after_the_previous_teardown(
    tmp_path: Path, lines: Lines
) -> None:
    gate = Gate(tmp_path / "gate")
    records = tmp_path / "record-1", tmp_path / "record-2"
    first = execution(
        "run-1", "exec-1", OZ_STANDIN_SCRIPT=str(gate.path), OZ_STANDIN_RECORD=str(records[0])
    )
    second = execution(
        "run-1", "exec-2", OZ_STANDIN_PROMPT="echo second", OZ_STANDIN_RECORD=str(records[1])
    )
    agent_started = lines.event("agent started")
    # Cleanup off: the run's workspace is still there when the follow-up starts.
    async with running_worker(direct_backend(tmp_path, cleanup=False)) as local:
        server = local.server
        with trio.fail_after(30):
            await server.send(first)
            await agent_started.wait()
            await server.send(second)
            await server.wait_until(lambda: server.messages_for("run-1") == [CLAIMED, CLAIMED])
            # Claimed, not started: exec-1's agent still waits at its gate.
            assert ("exec-2", "setup started") not in records_of(lines, "run-1")
            await gate.open("echo first")
            await server.wait_until(lambda: len(terminals(server.messages_for("run-1"))) == 2)
            await local.worker.outbox.wait_empty()
        assert server.messages_for("run-1") == [CLAIMED, CLAIMED, COMPLETED, COMPLETED]
    order = records_of(lines, "run-1")
    first_teardown = next(
        i for i, r in enumerate(order) if r[0] == "exec-1" and "teardown done" in r[1]
    )
    second_setup = order.index(("exec-2", "setup started"))
    assert first_teardown < second_setup, order
    assert lines.output("run-1", "agent stdout") == ["first", "second"]
    cwds = [json.loads(record.read_text())["cwd"] for record in records]
    assert cwds == [str(tmp_path / "ws" / "run-1")] * 2  # the same workspace, reused


async def test_capacity_counts_executions_and_a_cancel_ends_each_with_one_message(
    tmp_path: Path, lines: Lines
) -> None:
    gate = Gate(tmp_path / "gate")
    agent_started = lines.event("agent started")
    async with running_worker(direct_backend(tmp_path), max_concurrent_tasks=2) as local:
        server = local.server
        with trio.fail_after(30):
            await server.send(execution("run-1", "exec-1", OZ_STANDIN_SCRIPT=str(gate.path)))
            await agent_started.wait()
            await server.send(execution("run-1", "exec-2", OZ_STANDIN_PROMPT="echo never"))
            await server.send(execution("run-2", "exec-1"))
            rejected = await server.wait_for(lambda m: isinstance(m, TaskRejected))
            assert rejected == TaskRejected("run-2", REJECT_AT_CAPACITY)
            await server.send(TaskCancellation("run-1"))
            await server.wait_until(lambda: len(terminals(server.messages_for("run-1"))) == 2)
            await local.worker.supervisor.wait_idle()
            await local.worker.outbox.wait_empty()
        cancelled = TaskCompleted("run-1", "Task cancelled by user request.", "CANCELLED")
        assert server.messages_for("run-1") == [CLAIMED, CLAIMED, cancelled, cancelled]
    order = records_of(lines, "run-1")
    # The waiting execution never started; the running one was torn down.
    assert ("exec-2", "setup started") not in order
    assert any(r[0] == "exec-1" and "teardown done" in r[1] for r in order), order
    assert lines.output("run-1", "agent stdout") == []
