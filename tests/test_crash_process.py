"""``kill -9`` of a real ``ozw`` process on the direct backend, then a restart: nothing
the dead worker started survives the restart, and its workspace goes only after."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

import pytest
import trio

from ozw.wire.codec import TaskClaimed, TaskCompleted
from tests.support.procs import alive, processes_carrying, wait_until_gone
from tests.support.worker import assignment, terminal_for
from tests.support.worker_process import start_direct_worker, start_ozw

pytestmark = pytest.mark.slow


def held_under(pid: int, directory: Path) -> list[str]:
    """The files and directories (descriptors, cwd) process ``pid`` holds under ``directory``."""
    links = [f"/proc/{pid}/cwd", *(f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd"))]
    held = []
    for link in links:
        with contextlib.suppress(OSError):
            target = os.readlink(link)
            if target == str(directory) or target.startswith(f"{directory}/"):
                held.append(target)
    return held


def read_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


async def test_a_restart_after_kill_9_stops_the_dead_workers_agents_then_sweeps(
    tmp_path: Path,
) -> None:
    marker = f"ozw-test-{uuid.uuid4()}"
    pid_file = tmp_path / "pids"
    workspace = tmp_path / "workspaces" / "crashed"
    async with trio.open_nursery() as nursery:
        server, first = await start_direct_worker(
            nursery, tmp_path, worker_id="crash-worker", kill_grace="1s"
        )
        with trio.fail_after(30):
            await server.wait_connected()
            task = assignment("crashed")
            task.env_vars.update(
                {
                    # Two SIGTERM-proof descendants: one in the agent's group, one daemon.
                    "OZ_STANDIN_PROMPT": "spawn child; spawn daemon; echo ready; sleep 100",
                    "OZ_STANDIN_PIDFILE": str(pid_file),
                    "OZW_TEST_MARKER": marker,
                }
            )
            await server.send(task)
            await first.wait_line(r"task=crashed \[agent stdout\] ready")
        agent, *descendants = read_pids(pid_file)
        assert len(descendants) == 2
        assert workspace.is_dir()

        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        # The kernel ends the agent itself (its parent died) ...
        assert await wait_until_gone([agent], timeout=10) == []
        # ... not what it started: those are the ledger's to find.
        assert all(alive(pid) for pid in descendants)
        assert workspace.is_dir()

        second = await start_ozw(nursery, tmp_path / "worker.toml")  # the same worker
        with trio.fail_after(30):
            await second.wait_line("connected")
            stopping = await second.wait_line(r"stopping process group \d+ \(agent\) left running")
            removed = await second.wait_line(f"removed leftover workspace {workspace}")
        assert second.lines.index(stopping) < second.lines.index(removed)
        assert await wait_until_gone(descendants, timeout=5) == []
        assert processes_carrying(marker) == []
        assert not workspace.exists()

        # The re-queued task runs again, in a fresh workspace.
        with trio.fail_after(30):
            again = assignment("crashed")
            again.env_vars.update({"OZ_STANDIN_PROMPT": "echo again", "OZW_TEST_MARKER": marker})
            await server.send(again)
            await second.wait_line(r"task=crashed \[agent stdout\] again")
            completed = await server.wait_for(terminal_for("crashed"))
            await second.wait_line(r"task=crashed completed")
            # Idle: nothing held open in the workspace root, so its volume can be unmounted.
            assert second.process is not None
            assert held_under(second.process.pid, tmp_path / "workspaces") == []
            second.send_signal(signal.SIGINT)
            assert await second.wait() == 0
        assert isinstance(completed, TaskCompleted), completed
        claims = [m for m in server.messages_for("crashed") if isinstance(m, TaskClaimed)]
        assert len(claims) == 2  # once per worker
        assert processes_carrying(marker) == []
        assert "Traceback" not in first.log + second.log
        nursery.cancel_scope.cancel()
