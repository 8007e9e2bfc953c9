"""Crash clean-up pieces: the kernel ends a child whose worker died, the process ledger,
and stopping a dead worker's leftovers without ever touching a reused pid."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import anyio
import pytest
import sniffio

from ozw.backends.execution import ProcessLedger, ProcessRunner, stop_leftovers
from ozw.backends.execution.ledger import LEDGER_PREFIX, Entry, abandoned_ledgers, parse_ledger
from ozw.backends.execution.leftovers import leftover_members
from ozw.backends.execution.procfs import ProcStat, read_stat
from ozw.backends.execution.spawn import guarded_command
from ozw.telemetry.logs import TaskLog
from tests.support.event_loops import on_both_loops
from tests.support.procs import alive, wait_until_gone

pytestmark = pytest.mark.slow

# ------------------------------------------------------------------ PR_SET_PDEATHSIG

SPAWNER = textwrap.dedent(
    """
    import sys, time, trio
    from ozw.backends.execution import spawn
    if sys.argv[1] == "pre-exec":
        spawn._setpriv = lambda: None  # as on a machine without util-linux setpriv

    async def main():
        child = await spawn.spawn(["sleep", "60"], env={"PATH": "/usr/bin:/bin"})
        print(child.pid, flush=True)
        time.sleep(60)

    trio.run(main)
    """
)


@pytest.mark.parametrize("way", ["setpriv", "pre-exec"])
@on_both_loops
async def test_the_kernel_ends_a_child_whose_worker_was_killed(way: str) -> None:
    # A stand-in worker starts a child through spawn(), then dies of SIGKILL.
    async with await anyio.open_process(
        [sys.executable, "-c", SPAWNER, way], stdout=subprocess.PIPE, start_new_session=True
    ) as worker:
        assert worker.stdout is not None
        with anyio.fail_after(20):
            child = int(await worker.stdout.receive())
        assert alive(child)
        worker.kill()
        await worker.wait()
    assert await wait_until_gone([child], timeout=10) == []


def test_setpriv_is_used_where_util_linux_has_it() -> None:
    # The fast way (vfork, no Python in the child) is the one this machine runs.
    assert guarded_command(["sleep", "1"], os.getpid()) is not None


def test_the_guard_never_runs_the_command_once_the_worker_is_gone(tmp_path: Path) -> None:
    # A worker that died before the parent-death signal was set: the child's parent is
    # then someone else (here: told the worker is pid 1, which is not its parent).
    marker = tmp_path / "ran"
    for worker, ran in ((1, False), (os.getpid(), True)):
        argv = guarded_command(["touch", str(marker)], worker)
        assert argv is not None
        completed = subprocess.run(argv, env={"PATH": "/usr/bin:/bin"}, check=False)
        assert (completed.returncode == 0) is ran
        assert marker.exists() is ran


# Trio's idle cached worker threads carry this name (other threads, say an exporter's
# from an earlier test, are not what this test is about).
TRIO_THREADS = "Trio thread "


def _thread_names() -> list[str]:
    return [thread.name for thread in threading.enumerate()]


@on_both_loops
async def test_a_child_outlives_the_thread_that_was_idle(tmp_path: Path) -> None:
    # Trio forks in worker threads that exit when idle; spawn() starts children on a
    # thread that lives as long as the process, so a child started after a burst of
    # thread work stays alive.
    for _ in range(4):
        await anyio.to_thread.run_sync(lambda: None)
    runner = ProcessRunner(kill_grace=1)
    pid_file = tmp_path / "pid"
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: runner.run(
                ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"],
                log=TaskLog("t"),
                label="x",
                env={"PATH": "/usr/bin:/bin"},
            )
        )
        with anyio.fail_after(10):
            while not pid_file.exists() or not pid_file.read_text().strip():  # noqa: ASYNC110
                await anyio.sleep(0.01)
        pid = int(pid_file.read_text())
        if sniffio.current_async_library() == "trio":
            # Trio's worker threads exit after 10 idle seconds: once every one has
            # gone, a child forked on one of them would have had its SIGKILL.
            # (anyio's asyncio workers only exit when a later call prunes them.)
            with anyio.fail_after(60):
                while any(name.startswith(TRIO_THREADS) for name in _thread_names()):  # noqa: ASYNC110
                    await anyio.sleep(0.2)
        assert alive(pid)
        tg.cancel_scope.cancel()
    assert not alive(pid)


# -------------------------------------------------------------------------- ledger


def test_parse_ledger_reads_the_first_line_and_survives_garbage() -> None:
    line = json.dumps({"123": {"start": 99, "label": "agent"}}).encode()
    assert parse_ledger(line + b"\n" + b'"stale tail of a longer write"}') == [
        Entry(123, 99, "agent")
    ]
    assert parse_ledger(b"") == []
    assert parse_ledger(b"{not json") == []
    assert parse_ledger(b'{"1": {"label": "no start"}}') == []


def gone(path: str) -> bool:
    return not os.path.lexists(path)


def read_ledger(ledger: ProcessLedger) -> list[Entry]:
    assert ledger.path is not None, "a ledger file exists while a group lives"
    return parse_ledger(Path(ledger.path).read_bytes())


def held_in(directory: Path) -> list[str]:
    """What this process holds open under ``directory`` (its file descriptors)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(directory) + "/"):
                held.append(target)
    return held


@on_both_loops
async def test_the_runner_records_live_groups_and_forgets_reaped_ones(tmp_path: Path) -> None:
    ledger = ProcessLedger.open(str(tmp_path))
    runner = ProcessRunner(kill_grace=1, ledger=ledger)
    started = anyio.Event()
    seen: list[list[Entry]] = []

    async def watch() -> None:
        with anyio.fail_after(10):
            while not runner.live_groups:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        seen.append(read_ledger(ledger))
        started.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        tg.start_soon(
            lambda: runner.run(["sh", "-c", "sleep 60"], log=TaskLog("t"), label="agent", env={})
        )
        await started.wait()
        tg.cancel_scope.cancel()
    (pgid,) = [entry.pgid for entry in seen[0]]
    stat = read_stat(os.getpid())
    assert stat is not None
    assert seen[0][0].label == "agent"
    assert seen[0][0].start_ticks >= stat.start_ticks
    # Idle again: no file, nothing held open in the directory (it may be unmounted).
    assert ledger.path is None
    assert os.listdir(tmp_path) == []
    assert held_in(tmp_path) == []
    ledger.close()
    assert pgid > 0


def test_a_ledger_is_made_locked_and_renamed_into_place(tmp_path: Path) -> None:
    ledger = ProcessLedger.open(str(tmp_path))
    assert os.listdir(tmp_path) == []
    ledger.record(os.getpid(), "self")
    assert ledger.path is not None
    assert os.listdir(tmp_path) == [Path(ledger.path).name]
    assert held_in(tmp_path) == [ledger.path]
    ledger.forget(os.getpid())
    assert os.listdir(tmp_path) == []
    assert held_in(tmp_path) == []


def test_a_ledger_directory_must_be_writable(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        ProcessLedger.open(str(tmp_path / "absent"))


def test_a_ledger_held_by_a_live_worker_is_not_abandoned(tmp_path: Path) -> None:
    live = ProcessLedger.open(str(tmp_path))
    live.record(os.getpid(), "self")  # a live group: the file exists and is held
    assert live.path is not None
    dead = tmp_path / f"{LEDGER_PREFIX}1-dead.json"
    dead.write_text(json.dumps({"4242": {"start": 7, "label": "agent"}}) + "\n")
    with abandoned_ledgers(str(tmp_path)) as ledgers:
        assert ledgers == [(str(dead), [Entry(4242, 7, "agent")])]
    assert not dead.exists()
    assert Path(live.path).exists()
    live.close()


# ---------------------------------------------------------------------- leftovers


def test_a_reused_pid_is_never_taken_for_the_recorded_group() -> None:
    entry = Entry(pgid=100, start_ticks=5000, label="agent")
    ours = [
        ProcStat(100, "S", 100, 5000),  # the recorded leader
        ProcStat(101, "S", 100, 5100),  # its child
        ProcStat(102, "Z", 100, 5200),  # a zombie does not count
        ProcStat(200, "S", 200, 4000),  # another group
    ]
    assert leftover_members(entry, ours) == [100, 101]
    # The leader is gone, its child still runs in the group.
    assert leftover_members(entry, ours[1:]) == [101]
    # pid 100 now belongs to a later process: the group is someone else's.
    reused = [ProcStat(100, "S", 100, 9000), ProcStat(103, "S", 100, 9100)]
    assert leftover_members(entry, reused) == []
    # A member older than the recorded leader cannot be of its group.
    assert leftover_members(entry, [ProcStat(104, "S", 100, 10)]) == []


def write_dead_ledger(directory: Path, table: dict[str, dict[str, object]]) -> str:
    path = directory / f"{LEDGER_PREFIX}1-dead.json"
    path.write_text(json.dumps(table) + "\n")
    return str(path)


@on_both_loops
async def test_stop_leftovers_terms_then_kills_only_the_recorded_groups(tmp_path: Path) -> None:
    stubborn = await anyio.open_process(
        ["sh", "-c", "trap '' TERM; sleep 60 & wait"], start_new_session=True
    )
    polite = await anyio.open_process(["sleep", "60"], start_new_session=True)
    bystander = await anyio.open_process(["sleep", "60"], start_new_session=True)
    try:
        table: dict[str, dict[str, object]] = {}
        for process in (stubborn, polite):
            stat = read_stat(process.pid)
            assert stat is not None
            table[str(process.pid)] = {"start": stat.start_ticks, "label": "agent"}
        # A recorded group whose pid now runs something else (a different start time).
        stat = read_stat(bystander.pid)
        assert stat is not None
        table[str(bystander.pid)] = {"start": stat.start_ticks - 1, "label": "old"}
        ledger = write_dead_ledger(tmp_path, table)

        with anyio.fail_after(20):
            stopped = await stop_leftovers(str(tmp_path), kill_grace=0.5)
        assert sorted(e.pgid for e in stopped) == sorted([stubborn.pid, polite.pid])
        with anyio.fail_after(5):
            assert await stubborn.wait() == -signal.SIGKILL  # it ignored SIGTERM
            assert await polite.wait() == -signal.SIGTERM
        assert bystander.returncode is None  # never signalled
        assert gone(ledger)
    finally:
        for process in (stubborn, polite, bystander):
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await process.wait()
