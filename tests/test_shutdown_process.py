"""Ctrl-C of a real ``ozw`` process running real agents on the direct backend."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
import trio

from ozw.dev.server import DispatchServer
from ozw.wire.codec import (
    REJECT_SHUTTING_DOWN,
    TaskAssignment,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskRejected,
)
from tests.support.ozw_process import OzwProcess
from tests.support.procs import processes_carrying
from tests.support.worker import API_KEY, assignment, terminal_for
from tests.support.worker_process import start_direct_worker

pytestmark = pytest.mark.slow


async def start_worker(
    nursery: trio.Nursery,
    tmp_path: Path,
    *,
    kill_grace: str = "5s",
    shutdown_grace: str = "30s",
    args: tuple[str, ...] = (),
) -> tuple[DispatchServer, OzwProcess]:
    """A dispatch server and a real ``ozw`` configured against it (teardown marks files
    under ``tmp_path/teardown``)."""
    markers = tmp_path / "teardown"
    markers.mkdir()
    return await start_direct_worker(
        nursery, tmp_path, worker_id="sigint-worker", kill_grace=kill_grace,
        top=f'shutdown_grace = "{shutdown_grace}"',
        extra=f'teardown_command = "echo torn-down > {markers}/$OZ_RUN_ID"', args=args,
    )  # fmt: skip


async def test_first_sigint_cancels_tasks_runs_teardown_reports_and_exits_0(tmp_path: Path) -> None:
    marker = f"ozw-test-{uuid.uuid4()}"
    async with trio.open_nursery() as nursery:
        server, ozw = await start_worker(nursery, tmp_path)
        with trio.fail_after(30):
            ws = await server.wait_connected()
            for task_id in ("one", "two"):
                task = assignment(task_id)
                task.env_vars.update(
                    {"OZ_STANDIN_PROMPT": "echo ready; sleep 100", "OZW_TEST_MARKER": marker}
                )
                await server.send(task)
                await ozw.wait_line(rf"task={task_id} \[agent stdout\] ready")
            assert len(processes_carrying(marker)) == 2
            ozw.send_signal(signal.SIGINT)
            assert await ozw.wait() == 0
        for task_id in ("one", "two"):
            assert (tmp_path / "teardown" / task_id).read_text().strip() == "torn-down"
            messages = server.messages_for(task_id)
            assert messages[0] == TaskClaimed(task_id, "sigint-worker")
            assert len(messages) == 2
            assert isinstance(messages[1], TaskFailed)
            assert messages[1].failure_reason == "graceful_shutdown"
        assert ws.closed is not None
        assert ws.closed.code == 1000
        assert processes_carrying(marker) == []
        assert "received SIGINT: stopping gracefully" in ozw.log
        assert "press Ctrl-C again to stop at once" in ozw.log
        assert "Traceback" not in ozw.log
        assert API_KEY not in ozw.log
        nursery.cancel_scope.cancel()


async def test_second_sigint_kills_at_once_and_exits_130(tmp_path: Path) -> None:
    marker = f"ozw-test-{uuid.uuid4()}"
    async with trio.open_nursery() as nursery:
        # The agent ignores SIGTERM and the grace periods are long: only a forced stop is fast.
        server, ozw = await start_worker(nursery, tmp_path, kill_grace="60s", shutdown_grace="120s")
        with trio.fail_after(30):
            await server.wait_connected()
            task = assignment("stubborn")
            task.env_vars.update(
                {
                    "OZ_STANDIN_PROMPT": "ignore sigterm; spawn child; echo ready; sleep 100",
                    "OZW_TEST_MARKER": marker,
                }
            )
            await server.send(task)
            await ozw.wait_line(r"task=stubborn \[agent stdout\] ready")
            ozw.send_signal(signal.SIGINT)
            await ozw.wait_line("stopping gracefully")
            started = trio.current_time()
            ozw.send_signal(signal.SIGINT)
            assert await ozw.wait() == 130
            elapsed = trio.current_time() - started
        # A correctness bound (the kill grace is 60 s), not a benchmark.
        assert elapsed < 15, elapsed
        assert processes_carrying(marker) == []
        assert "stopping now, killing every task" in ozw.log
        nursery.cancel_scope.cancel()


def gated(task_id: str, gate: Path, marker: str) -> TaskAssignment:
    """An assignment whose agent runs until the test writes its steps into ``gate``."""
    os.mkfifo(gate)
    task = assignment(task_id)
    task.env_vars.update({"OZ_STANDIN_SCRIPT": str(gate), "OZW_TEST_MARKER": marker})
    return task


async def open_gate(gate: Path, steps: str = "echo finished") -> None:
    # Opening for writing waits for the agent to open it for reading.
    await trio.Path(gate).write_text(steps)


async def start_draining(
    nursery: trio.Nursery, tmp_path: Path, task_id: str
) -> tuple[DispatchServer, OzwProcess, str]:
    """A worker whose task ``task_id`` waits at ``tmp_path/gate``, then SIGQUIT: it drains.
    The server, the worker, and the marker of the task's processes."""
    marker = f"ozw-test-{uuid.uuid4()}"
    server, ozw = await start_worker(nursery, tmp_path)
    with trio.fail_after(30):
        await server.wait_connected()
        await server.send(gated(task_id, tmp_path / "gate", marker))
        await ozw.wait_line(rf"task={task_id} agent started")
        ozw.send_signal(signal.SIGQUIT)
        await ozw.wait_line("received SIGQUIT: draining")
    return server, ozw, marker


async def test_sigquit_drains_running_tasks_finish_and_it_exits_0(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server, ozw, marker = await start_draining(nursery, tmp_path, "draining")
        with trio.fail_after(30):
            await server.send(assignment("late"))
            await server.wait_for(lambda m: isinstance(m, TaskRejected))
            await open_gate(tmp_path / "gate")
            assert await ozw.wait() == 0
        assert server.messages_for("draining") == [
            TaskClaimed("draining", "sigint-worker"),
            TaskCompleted("draining", "Task completed successfully"),
        ]
        assert server.messages_for("late") == [TaskRejected("late", REJECT_SHUTTING_DOWN)]
        assert (tmp_path / "teardown" / "draining").read_text().strip() == "torn-down"
        assert "drained: every task has finished" in ozw.log
        assert processes_carrying(marker) == []
        nursery.cancel_scope.cancel()


async def test_sigterm_during_a_drain_turns_it_into_the_normal_stop(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server, ozw, marker = await start_draining(nursery, tmp_path, "stopped")
        with trio.fail_after(30):
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
        messages = server.messages_for("stopped")
        assert len(messages) == 2
        assert isinstance(messages[1], TaskFailed)
        assert messages[1].failure_reason == "graceful_shutdown"
        assert (tmp_path / "teardown" / "stopped").read_text().strip() == "torn-down"
        assert "received SIGTERM: stopping gracefully" in ozw.log
        # Whoever sent SIGTERM (systemd, Kubernetes) has no Ctrl-C to press.
        assert "send SIGTERM again to stop at once" in ozw.log
        assert "Ctrl-C" not in ozw.log
        assert processes_carrying(marker) == []
        nursery.cancel_scope.cancel()


async def test_sighup_is_logged_and_ignored(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server, ozw = await start_worker(nursery, tmp_path)
        with trio.fail_after(30):
            await server.wait_connected()
            ozw.send_signal(signal.SIGHUP)
            await ozw.wait_line("received SIGHUP: ignored")
            # Still working: a task runs to its end after the SIGHUP.
            await server.send(assignment("after-hup"))
            done = await server.wait_for(terminal_for("after-hup"))
            assert done == TaskCompleted("after-hup", "Task completed successfully")
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
        nursery.cancel_scope.cancel()
