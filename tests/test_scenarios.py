"""Fault scenarios on a real ``ozw`` process (direct backend, stand-in agent) that hold
today, kept as the project's own tests (issue 12): a dispatch server restart while a
result is owed, SIGTERM with many tasks running, and a short soak watched for leaks.

The other fault scenarios live next to the code they exercise, not repeated here:
a frozen (silent) server is declared dead and redialled in
``tests/test_worker.py::test_a_silent_server_is_declared_dead_and_the_worker_reconnects``;
``kill -9`` of the worker and the sweep at the next start in
``tests/test_crash_process.py``; a worker killed during ``docker create`` and a Docker
daemon restart in ``tests/docker/test_docker_faults.py``; reattachment after ``kill -9``
on Kubernetes in ``tests/kubernetes/test_kubernetes_process.py``.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
import trio

from ozw.dev.server import DispatchServer
from ozw.wire.codec import TaskAssignment, TaskClaimed, TaskCompleted, TaskFailed, WorkerMessage
from tests.support.ozw_process import OzwProcess
from tests.support.procs import processes_carrying, wait_until_gone
from tests.support.worker import (
    assignment,
    start_stoppable_server,
    terminal_for,
)
from tests.support.worker_process import (
    direct_backend,
    start_direct_worker,
    start_ozw,
    write_worker_config,
)

pytestmark = pytest.mark.slow

SOAK_SECONDS = 24.0
WARM_UP_SECONDS = 6.0
RSS_GROWTH_LIMIT_KB = 10 * 1024


SHUTDOWN_GRACE = 'shutdown_grace = "30s"'


def write_config(tmp_path: Path, port: int) -> Path:
    backend = direct_backend(tmp_path, kill_grace="5s")
    return write_worker_config(
        tmp_path, port, worker_id="scenario-worker", top=SHUTDOWN_GRACE, backend=backend
    )


async def start_scenario_worker(
    nursery: trio.Nursery, tmp_path: Path
) -> tuple[DispatchServer, OzwProcess]:
    return await start_direct_worker(
        nursery, tmp_path, worker_id="scenario-worker", kill_grace="5s", top=SHUTDOWN_GRACE
    )


def task_with(task_id: str, prompt: str, marker: str) -> TaskAssignment:
    task = assignment(task_id)
    task.env_vars.update({"OZ_STANDIN_PROMPT": prompt, "OZW_TEST_MARKER": marker})
    return task


def is_terminal(message: WorkerMessage) -> bool:
    return isinstance(message, TaskCompleted | TaskFailed)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_a_result_owed_while_the_server_is_away_arrives_once_after_it_returns(
    tmp_path: Path,
) -> None:
    marker = f"ozw-test-{uuid.uuid4()}"
    async with trio.open_nursery() as nursery:
        first, first_scope = await start_stoppable_server(nursery)
        port = first.port or 0
        config = write_config(tmp_path, port)
        ozw = await start_ozw(nursery, config)
        with trio.fail_after(60):
            await first.wait_connected()
            await first.send(task_with("owed", "echo ready; sleep 3; echo done", marker))
            await ozw.wait_line(r"task=owed \[agent stdout\] ready")
            first_scope.cancel()
            await ozw.wait_line("reconnecting")
            # The task ends while nobody listens: its result is owed.
            await ozw.wait_line(r"task=owed completed")
            second, _ = await start_stoppable_server(nursery, port)
            completed = await second.wait_for(terminal_for("owed"))
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
        assert isinstance(completed, TaskCompleted), completed
        assert [m for m in first.messages_for("owed") if is_terminal(m)] == []
        assert [m for m in second.messages_for("owed") if is_terminal(m)] == [completed]
        assert processes_carrying(marker) == []
        assert "Traceback" not in ozw.log
        nursery.cancel_scope.cancel()


async def test_sigterm_with_30_tasks_running_reports_each_once_and_leaves_no_agent(
    tmp_path: Path,
) -> None:
    marker = f"ozw-test-{uuid.uuid4()}"
    task_ids = [f"many-{i}" for i in range(30)]
    async with trio.open_nursery() as nursery:
        server, ozw = await start_scenario_worker(nursery, tmp_path)
        with trio.fail_after(90):
            await server.wait_connected()
            for task_id in task_ids:
                await server.send(task_with(task_id, "echo ready; sleep 100", marker))
            for task_id in task_ids:
                await ozw.wait_line(rf"task={task_id} \[agent stdout\] ready")
            assert len(processes_carrying(marker)) == len(task_ids)
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
        for task_id in task_ids:
            messages = server.messages_for(task_id)
            assert messages[0] == TaskClaimed(task_id, "scenario-worker")
            terminals = [m for m in messages if is_terminal(m)]
            assert len(terminals) == 1, messages
            assert isinstance(terminals[0], TaskFailed)
            assert terminals[0].failure_reason == "graceful_shutdown"
        assert processes_carrying(marker) == []
        assert "SIGTERM: stopping gracefully (30 running" in ozw.log
        assert "Traceback" not in ozw.log
        nursery.cancel_scope.cancel()


async def wait_for_fds(pid: int, count: int) -> int:
    """The worker closes a task's pipes just after it reports: wait (bounded) for them."""
    with trio.move_on_after(10):
        while open_fds(pid) != count:  # noqa: ASYNC110 (no event for another process's fds)
            await trio.sleep(0.05)
    return open_fds(pid)


async def test_a_short_soak_leaks_neither_memory_nor_file_descriptors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = f"ozw-test-{uuid.uuid4()}"
    batch = 4
    async with trio.open_nursery() as nursery:
        server, ozw = await start_scenario_worker(nursery, tmp_path)
        assert ozw.process is not None
        pid = ozw.process.pid
        await server.wait_connected()
        idle_fds = open_fds(pid)
        start = trio.current_time()
        warm_rss: int | None = None
        warm_fds: int | None = None
        samples: list[tuple[float, int, int, int]] = []
        sent = 0
        with trio.fail_after(SOAK_SECONDS + 60):
            while trio.current_time() - start < SOAK_SECONDS:
                ids = [f"soak-{sent + i}" for i in range(batch)]
                sent += batch
                for task_id in ids:
                    await server.send(task_with(task_id, "echo hi; print 20 lines", marker))
                for task_id in ids:
                    await server.wait_for(terminal_for(task_id))
                elapsed = trio.current_time() - start
                samples.append((elapsed, sent, rss_kb(pid), open_fds(pid)))
                if warm_rss is None and elapsed >= WARM_UP_SECONDS:
                    warm_rss = rss_kb(pid)
                    warm_fds = await wait_for_fds(pid, idle_fds)
            final_fds = await wait_for_fds(pid, idle_fds)
            final_rss = rss_kb(pid)
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
        with capsys.disabled():
            print(f"\nsoak: {sent} tasks in {SOAK_SECONDS:g}s; idle fds {idle_fds}")
            for elapsed, done, rss, fds in samples[:: max(1, len(samples) // 12)]:
                print(f"soak: t={elapsed:5.1f}s tasks={done:4d} rss={rss} kB fds={fds}")
            print(f"soak: after warm-up rss={warm_rss} kB fds={warm_fds}")
            print(f"soak: at the end   rss={final_rss} kB fds={final_fds}")
        assert warm_rss is not None, "the soak ended before its warm-up"
        completed = [r.message for r in server.received if isinstance(r.message, TaskCompleted)]
        assert len(completed) == sent
        assert final_rss - warm_rss < RSS_GROWTH_LIMIT_KB
        assert warm_fds == idle_fds
        assert final_fds == idle_fds
        assert await wait_until_gone(processes_carrying(marker)) == []
        assert "Traceback" not in ozw.log
        nursery.cancel_scope.cancel()
