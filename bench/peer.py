"""ozw beside the Go worker (``python -m bench --peer PATH``): the same measures of both
worker processes, alternating round by round in one run on one machine.

Each row's ``worker`` samples are ozw's and its ``baseline`` samples the Go worker's,
so ``ratio`` is ozw / Go. Both are real processes driven through the conformance
runner's session (tests/conformance/session.py: ozw's dispatch server, the same flags
and configuration, the direct backend) with a shell agent that writes its pid to a FIFO
the moment it starts (so "agent running" is an event, not a poll) and then sleeps for
``BENCH_SLEEP`` seconds (exits at once without it).

Each round first runs a few tasks unmeasured (start-up's first-use costs, both workers).
Rows: assignment → agent running; assignment → task_completed; server cancel →
task_completed; reconnect → owed result delivered (a task ends while the server is away
for :data:`DOWN` seconds; from the server's return to the result); idle RSS; RSS and
open fds per running task at 100 (and 1,000 unless quick) sleeping agents; CPU seconds
per 100 tasks (user + system of the worker process; the agents' own CPU is not counted).

Docker rows: both workers in turn on one engine (the conformance docker world: a
private ``dockerd`` unless ``DOCKER_HOST``, a local registry, the conformance images;
the Go worker pulls every time), assignment → agent running / task_completed with the
stand-in agent sidecar, whose start is a probe file it writes in a bind mount.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Final

import trio
from tests.conformance.docker_world import DockerWorld, docker_world
from tests.conformance.session import Session
from tests.conformance.workers import Settings, Worker, ozw_worker
from tests.support.procs import alive

from bench.stats import Row

AGENT: Final = """#!/bin/sh
echo "$$" >> "$BENCH_FIFO"
[ -n "$BENCH_SLEEP" ] && exec sleep "$BENCH_SLEEP"
exit 0
"""
WARM_UP: Final = 3
RECONNECTS: Final = 2
DOCKER_TASKS: Final = 3
"""Measured docker tasks per round and worker."""
DOWN: Final = 2.0
"""Seconds the server stays away in the reconnect measure (both workers back off)."""
QUICK: Final = 10
PAGE: Final = os.sysconf("SC_PAGE_SIZE")
TICK: Final = os.sysconf("SC_CLK_TCK")


class Starts:
    """Agents' start times, read from the FIFO they write their pids to."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.times: list[float] = []
        self.pids: list[int] = []
        # O_RDWR: the FIFO never reports end-of-file between agents.
        self._fd = os.open(path, os.O_RDWR)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        pending = b""
        while chunk := os.read(self._fd, 4096):
            now = time.perf_counter()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line:
                    self.times.append(now)
                    self.pids.append(int(line))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as stream:
        return int(stream.read().split()[1]) * PAGE


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stream:
        fields = stream.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Probe:
    """One worker process under measure: its session, its agents' starts, its results."""

    def __init__(self, session: Session, starts: Starts) -> None:
        self.session = session
        self.starts = starts
        self.results: dict[str, float] = {}
        session.on_receive.append(self._note)
        self.pid = session.pid

    def _note(self, received: object) -> None:
        frame = getattr(received, "frame", "")
        if '"task_completed"' in frame or '"task_failed"' in frame:
            task_id = getattr(getattr(received, "message", None), "task_id", "")
            self.results.setdefault(task_id, time.perf_counter())

    async def assign(self, task_id: str, sleep: float | None = None) -> float:
        env = {"BENCH_FIFO": str(self.starts.path)}
        if sleep is not None:
            env["BENCH_SLEEP"] = str(sleep)
        sent = time.perf_counter()
        await self.session.assign(task_id, None, env=env)
        return sent

    async def started(self, count: int) -> float:
        await self.session.until(lambda: len(self.starts.times) >= count, f"{count} agents")
        return self.starts.times[count - 1]

    async def result(self, task_id: str) -> float:
        await self.session.until(lambda: task_id in self.results, f"result {task_id}")
        return self.results[task_id]


async def measure_round(worker: Worker, samples: dict[str, list[float]], many: list[int]) -> None:
    """One fresh worker process: every measure once (``many``: running-task counts)."""
    with tempfile.TemporaryDirectory(prefix="ozw-peer-") as scratch:
        tmp = Path(scratch)
        agent = tmp / "agent.sh"
        agent.write_text(AGENT)
        agent.chmod(0o755)
        session = Session(worker, Settings(oz_path=str(agent)), tmp / "run")
        try:
            async with trio.open_nursery() as nursery:
                await session.start(nursery)
                probe = Probe(session, Starts(tmp / "starts"))
                await trio.sleep(0.5)  # let start-up settle before the idle figure
                samples["idle RSS"].append(rss(probe.pid))
                for i in range(WARM_UP):  # first-use costs are start-up, not per task
                    await probe.assign(f"warm-{i}")
                    await probe.result(f"warm-{i}")
                for i in range(WARM_UP, WARM_UP + QUICK):
                    sent = await probe.assign(f"quick-{i}")
                    samples["assignment → agent running"].append(await probe.started(i + 1) - sent)
                    samples["assignment → task_completed"].append(
                        await probe.result(f"quick-{i}") - sent
                    )
                started = WARM_UP + QUICK
                for i in range(3):
                    await probe.assign(f"cancel-{i}", sleep=600)
                    started += 1
                    await probe.started(started)
                    sent = time.perf_counter()
                    await session.cancel(f"cancel-{i}")
                    samples["server cancel → task_completed"].append(
                        await probe.result(f"cancel-{i}") - sent
                    )
                for i in range(RECONNECTS):
                    started += 1
                    samples["reconnect → owed result delivered"].append(
                        await owed_result(probe, f"owed-{i}", started)
                    )
                before = cpu_seconds(probe.pid)
                for i in range(100):
                    await probe.assign(f"cpu-{i}")
                for i in range(100):
                    await probe.result(f"cpu-{i}")
                samples["CPU seconds per 100 tasks"].append(cpu_seconds(probe.pid) - before)
                started += 100
                for count in many:
                    idle_rss, idle_fds = rss(probe.pid), fds(probe.pid)
                    for i in range(count):
                        await probe.assign(f"many{count}-{i}", sleep=600)
                    started += count
                    await probe.started(started)
                    await trio.sleep(0.5)  # the last claims and log lines settle
                    samples[f"RSS per running task at {count}"].append(
                        (rss(probe.pid) - idle_rss) / count
                    )
                    samples[f"fds per running task at {count}"].append(
                        (fds(probe.pid) - idle_fds) / count
                    )
                    for i in range(count):
                        await session.cancel(f"many{count}-{i}")
                    for i in range(count):
                        await probe.result(f"many{count}-{i}")
                await session.sigterm()
                nursery.cancel_scope.cancel()
        finally:
            session.close()


DOCKER: Final = Settings(backend="docker", volumes=("{tmp}/shared:/shared",))
"""The conformance docker world's settings; ``/shared`` is writable for the probes."""
TICK_POLL: Final = 0.001


async def touched(path: Path) -> float:
    """When ``path`` appeared (polled each millisecond: a container gives no event)."""
    # A file another process makes: no event to wait on, and a stat is cheap.
    while not path.exists():  # noqa: ASYNC110, ASYNC240
        await trio.sleep(TICK_POLL)
    return time.perf_counter()


async def measure_docker_round(
    worker: Worker, world: DockerWorld, samples: dict[str, list[float]], n: int
) -> None:
    """One fresh worker process on the shared engine: one unmeasured task (pulls, the
    sidecar volume), then ``n`` tasks one at a time. "Agent running" is the stand-in
    agent's probe file appearing in a bind-mounted directory (``STANDIN_TOUCH``)."""
    with tempfile.TemporaryDirectory(prefix="ozw-peer-docker-") as scratch:
        session = Session(worker, DOCKER, Path(scratch) / "run", docker=world)
        try:
            async with trio.open_nursery() as nursery:
                await session.start(nursery)
                probe = Probe(session, Starts(Path(scratch) / "starts"))
                for i in range(n + 1):
                    task_id = f"docker-{i}"
                    probes = session.tmp / "shared" / task_id
                    probes.mkdir()
                    env = {"STANDIN_TOUCH": f"/shared/{task_id}"}
                    sent = time.perf_counter()
                    await session.assign(
                        task_id,
                        None,
                        env=env,
                        docker_image=world.ref("task"),
                        sidecar_image=world.ref("agent"),
                    )
                    with trio.fail_after(60):
                        running = await touched(probes / ".standin-probe")
                    done = await probe.result(task_id)
                    if i:
                        samples["docker: assignment → agent running"].append(running - sent)
                        samples["docker: assignment → task_completed"].append(done - sent)
                await session.sigterm()
                nursery.cancel_scope.cancel()
        finally:
            session.close()
            world.clean()


async def owed_result(probe: Probe, task_id: str, started: int) -> float:
    """A task ends while the server is away (for :data:`DOWN` seconds): the time from the
    server's return to the owed result's arrival."""
    session = probe.session
    await probe.assign(task_id, sleep=0.2)
    await probe.started(started)
    pid = probe.starts.pids[started - 1]
    await session.stop_server()
    gone = time.perf_counter()
    await session.until(lambda: not alive(pid), f"agent of {task_id} to exit")
    await session.gone(session.workspaces / task_id)
    await trio.sleep(max(0.0, gone + DOWN - time.perf_counter()))
    back = time.perf_counter()
    await session.start_server()
    return await probe.result(task_id) - back


NOTES: Final = {
    "reconnect → owed result delivered": f"; the server away {DOWN:.0f} s, then back on"
    " its port: each worker's redial back-off decides the figure",
    "docker": "; one engine and local registry, both pull the task and sidecar images for"
    " every task; agent running = the stand-in agent's probe file in a bind mount",
}
UNITS: Final = {"RSS": "bytes", "fds": "count"}
GOALS: Final = {
    "assignment → agent running": "≤ 1.0x the Go worker",
    "assignment → task_completed": "≤ 1.0x the Go worker",
    "server cancel → task_completed": "≤ 1.0x the Go worker",
    "reconnect → owed result delivered": "≤ 1.0x the Go worker",
    "RSS": "≤ 1.0x the Go worker",
    "CPU seconds": "≤ 1.5x the Go worker",
    "idle RSS": "reported",
}


def bench_peer(go_binary: Path, rounds: int, many: list[int]) -> list[Row]:
    """Rows of ozw (worker) against the Go worker (baseline), ``rounds`` rounds each."""
    keys = [
        "assignment → agent running",
        "assignment → task_completed",
        "server cancel → task_completed",
        "reconnect → owed result delivered",
        "idle RSS",
        "CPU seconds per 100 tasks",
        *(f"{what} per running task at {n}" for n in many for what in ("RSS", "fds")),
        "docker: assignment → agent running",
        "docker: assignment → task_completed",
    ]
    ours: dict[str, list[float]] = {key: [] for key in keys}
    theirs: dict[str, list[float]] = {key: [] for key in keys}
    go = Worker("go", go_binary)
    for _ in range(rounds):
        trio.run(measure_round, ozw_worker(), ours, many)
        trio.run(measure_round, go, theirs, many)
    with docker_world() as world:
        for _ in range(rounds):
            trio.run(measure_docker_round, ozw_worker(), world, ours, DOCKER_TASKS)
            trio.run(measure_docker_round, go, world, theirs, DOCKER_TASKS)
    rows = []
    for key in keys:
        unit = next((u for word, u in UNITS.items() if word in key), "s")
        measure = key.removeprefix("docker: ")
        backend = "direct" if measure == key else "docker"
        rows.append(
            Row(
                f"peer: {measure} ({backend}; ozw / Go)",
                ours[key],
                theirs[key],
                unit=unit,
                note="baseline = the Go worker, alternating rounds in one run"
                + NOTES.get(measure if backend == "direct" else backend, ""),
                goal=GOALS.get(measure.split(" per running")[0].split(" per 100")[0], ""),
            )
        )
    return rows
