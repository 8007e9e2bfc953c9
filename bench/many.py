"""Many running tasks (issue 14 item 2): N sleeping agents under one direct worker.

The direct backend runs a shell stand-in for ``oz`` that prints one line and
``exec``s ``sleep``: a real process per task, in its own session, with its output
piped and relayed, as for a real agent (a Python stand-in would cost ~10 MB per
task of the machine's memory, not of the worker's).

The worker, the local dispatch server and this benchmark share one process and one
Trio loop (as in every row of ``python -m bench``), so each figure is an upper bound
on the worker's own:

- **RSS**: ``VmRSS`` of the process with N tasks running vs with none; the note
  gives the growth per running task.
- **event-loop lag**: a monitor task asks to wake every 5 ms and records how late it
  woke: while N tasks run (steady) and while N assignments arrive at once (from the
  first assignment sent until every agent has printed its line); baseline: the same
  monitor on the idle worker.
- **claim latency**: assignment written by the server → ``task_claimed`` read by the
  server, one assignment at a time, with N tasks running vs none running.

Machine limits: the note of the RSS row lists the file descriptors and processes
each running task holds, the limits that apply (``RLIMIT_NOFILE``, ``RLIMIT_NPROC``,
``kernel.pid_max``) and which one binds first. When a limit stops a task from
starting, the task fails with a reason naming the limit; the row says how many
failed and why instead of measuring N.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import trio

from bench.harness import Session, run_trio, with_worker
from bench.stats import Row, p99
from ozw.backends.direct import DirectBackend
from ozw.config import DirectConfig
from ozw.wire.codec import Task, TaskAssignment, TaskCancellation

SLEEPER = "#!/bin/sh\necho sleeping\nexec sleep 100000\n"
"""The stand-in agent: one line (the agent is running), then nothing until killed."""

LAG_TICK = 0.005


def assignment(task_id: str) -> TaskAssignment:
    return TaskAssignment(
        task_id,
        Task(id=task_id, title="sleeper", raw={"id": task_id, "title": "sleeper"}),
        execution_id=f"exec-{task_id}",
    )


def rss_bytes() -> int:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def user_processes() -> int:
    """Processes (threads count for RLIMIT_NPROC too) of this user, from /proc."""
    uid, count = os.getuid(), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += int(
                        next(
                            line.split()[1]
                            for line in Path(f"/proc/{name}/status").read_text().splitlines()
                            if line.startswith("Threads:")
                        )
                    )
            except (OSError, StopIteration):
                continue
    return count


def limits_note(count: int, fds_per_task: float) -> str:
    """The limits that apply to N running tasks, and which one binds first."""
    nofile, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    running_pids = sum(1 for name in os.listdir("/proc") if name.isdigit())
    room: dict[str, float] = {}
    if fds_per_task > 0:
        room[f"open files (RLIMIT_NOFILE {nofile})"] = (nofile - open_fds()) / fds_per_task
    if nproc != resource.RLIM_INFINITY:
        room[f"processes (RLIMIT_NPROC {nproc}, per user)"] = nproc - user_processes()
    room[f"pids (kernel.pid_max {pid_max})"] = pid_max - running_pids
    first = min(room, key=lambda name: room[name])
    listed = "; ".join(f"{name}: ~{int(left):,} more" for name, left in room.items())
    return (
        f"{fds_per_task:.1f} fds and 1 process per running task; room left at {count}: "
        f"{listed}; binds first: {first}"
    )


class LagMonitor:
    """Wakes every LAG_TICK and records how late (seconds) each wake-up was."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.recording = False

    async def run(self) -> None:
        while True:
            asked = trio.current_time() + LAG_TICK
            await trio.sleep_until(asked)
            if self.recording:
                self.samples.append(max(0.0, trio.current_time() - asked))

    async def record(self, body: trio.Event | float) -> list[float]:
        """Samples taken until ``body`` (an event, or a duration in seconds) is over."""
        self.samples, self.recording = [], True
        if isinstance(body, trio.Event):
            await body.wait()
        else:
            await trio.sleep(body)
        self.recording = False
        return self.samples


def bench_many(count: int, probes: int, steady_seconds: float) -> list[Row]:
    rss = Row(f"many: RSS, {count} running", unit="bytes", goal="≤ 150 MB at 1,000")
    steady = Row(f"many: event-loop lag, {count} running", goal="p99 ≤ 20 ms")
    burst = Row(f"many: event-loop lag, {count} assignments at once", goal="p99 ≤ 20 ms")
    claim = Row(f"many: claim latency, {count} running", goal="p99 ≤ 5 ms")
    with tempfile.TemporaryDirectory(prefix="ozw-bench-many-") as tmp:
        root = Path(tmp)
        sleeper = root / "oz"
        sleeper.write_text(SLEEPER)
        sleeper.chmod(0o755)
        config = DirectConfig(
            workspace_root=str(root / "workspaces"), oz_path=str(sleeper), kill_grace=2
        )
        backend = DirectBackend(config, cleanup=True, environ=dict(os.environ))

        async def claim_once(session: Session, task_id: str) -> float:
            session.probe.mark(task_id, "sent")
            await session.server.send(assignment(task_id))
            claimed = await session.probe.wait(task_id, "claimed")
            return claimed - session.probe.marks[task_id]["sent"]

        async def body(session: Session) -> None:
            monitor = LagMonitor()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(monitor.run)
                # Idle: baselines.
                for i in range(probes):
                    task_id = f"idle-{i}"
                    claim.baseline.append(await claim_once(session, task_id))
                    await session.server.send(TaskCancellation(task_id))
                    await session.probe.wait(task_id, "terminal")
                await trio.sleep(0.2)
                rss.baseline.append(rss_bytes())
                fds_idle = open_fds()
                steady.baseline = await monitor.record(steady_seconds)
                burst.baseline = list(steady.baseline)

                # N assignments at once; the lag is recorded until every agent has printed.
                ids = [f"sleeper-{i}" for i in range(count)]
                all_running = trio.Event()

                async def send_all() -> None:
                    for task_id in ids:
                        session.probe.mark(task_id, "sent")
                        await session.server.send(assignment(task_id))
                    for task_id in ids:
                        await _running_or_failed(session, task_id)
                    all_running.set()

                nursery.start_soon(send_all)
                started = time.perf_counter()
                burst.worker = await monitor.record(all_running)
                reach = time.perf_counter() - started
                failed = {
                    task_id: session.probe.failures[task_id]
                    for task_id in ids
                    if task_id in session.probe.failures
                }
                # Steady state.
                await trio.sleep(0.2)
                rss.worker.append(rss_bytes())
                fds_per_task = (open_fds() - fds_idle) / max(1, count - len(failed))
                steady.worker = await monitor.record(steady_seconds)
                for i in range(probes):
                    task_id = f"probe-{i}"
                    claim.worker.append(await claim_once(session, task_id))
                    await session.server.send(TaskCancellation(task_id))
                    await session.probe.wait(task_id, "terminal")
                # Stop them all the way the server would: cancellations.
                stop_started = time.perf_counter()
                for task_id in ids:
                    if task_id not in failed:
                        await session.server.send(TaskCancellation(task_id))
                for task_id in ids:
                    await session.probe.wait(task_id, "terminal")
                stopped = time.perf_counter() - stop_started
                nursery.cancel_scope.cancel()

            running = max(1, count - len(failed))
            per_task = (rss.worker[0] - rss.baseline[0]) / running
            rss.note = (
                f"idle {rss.baseline[0] / 2**20:.1f} MB, {count} running "
                f"{rss.worker[0] / 2**20:.1f} MB: {per_task / 1024:.1f} KiB per running task; "
                + limits_note(count, fds_per_task)
            )
            if failed:
                reasons = sorted(set(failed.values()))
                rss.note += f"; {len(failed)} of {count} FAILED to start: {reasons[0]}"
            steady.note = _lag_note(steady)
            burst.note = _lag_note(burst) + (
                f"; all {count} agents running {reach:.2f}s after the first assignment; "
                f"all cancelled and reported in {stopped:.2f}s"
            )
            claim.note = (
                f"p99 {claim.worker and p99(claim.worker) * 1e3:.2f} ms at {count} running, "
                f"{p99(claim.baseline) * 1e3:.2f} ms idle ({probes} probes each)"
            )

        run_trio(lambda: with_worker(backend, config, body, worker_id="bench-many"))
    return [rss, steady, burst, claim]


async def _running_or_failed(session: Session, task_id: str) -> None:
    """Wait until the agent printed its line, or the task ended (failed to start)."""
    async with trio.open_nursery() as nursery:

        async def first(key: str) -> None:
            await session.probe.wait(task_id, key)
            nursery.cancel_scope.cancel()

        nursery.start_soon(first, "agent_first")
        nursery.start_soon(first, "terminal")


def _lag_note(row: Row) -> str:
    return (
        f"p99 {p99(row.worker) * 1e3:.2f} ms, max {max(row.worker, default=0) * 1e3:.1f} ms "
        f"({len(row.worker)} wake-ups asked every {LAG_TICK * 1e3:g} ms); idle p99 "
        f"{p99(row.baseline) * 1e3:.2f} ms"
    )
