"""Worker overhead at scale: many trivial tasks vs plain WebSocket round trips.

Worker side: an in-process worker whose backend does nothing (setup, execute →
COMPLETED and teardown return at once) takes N tasks from the local dispatch server
over a real WebSocket on 127.0.0.1. Everything the worker does per task is still
done: decode + validate the assignment, build the task parameters, claim (one frame
back), run the lifecycle in its own nursery child with its cancel scopes, log,
queue and send ``task_completed`` through the outbox, update metrics.

Baseline: a trio-websocket echo server and client in the same process on
127.0.0.1; one round trip sends the very same assignment frame and waits for it to
come back.

- ``sequential``: one at a time (send, wait for ``task_completed`` / the echo);
  samples are per-task / per-round-trip latencies, interleaved.
- ``burst``: all M (5,000) sent at once, then wait for all M terminals / echoes; a
  sample is total time / M, one per repeat. The rate is 1 / ratio.

A task is one frame in and two frames out (claim + completion), a round trip one in
and one out: a ratio near 1.5 would be "the worker costs about its frames". Both rows
are reported figures, not goals: no workload sends thousands of instant tasks.
"""

from __future__ import annotations

import time
from typing import ClassVar

import trio
import trio_websocket as tws

from bench.harness import Session, run_one, run_trio, with_worker
from bench.stats import Row, median
from ozw.backends.base import Backend, ExecuteResult, TaskRun
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog
from ozw.wire.codec import Task, TaskAssignment, encode_message


class InstantRun(TaskRun):
    async def setup(self) -> None:
        pass

    async def execute(self) -> ExecuteResult:
        return ExecuteResult.COMPLETED

    async def teardown(self) -> None:
        pass


class InstantBackend(Backend):
    """Every task completes at once: what is left is the worker's own cost."""

    name: ClassVar[str] = "instant"

    def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
        return InstantRun(params, log)


def assignment(task_id: str) -> TaskAssignment:
    return TaskAssignment(
        task_id,
        Task(id=task_id, title="trivial", raw={"id": task_id, "title": "trivial"}),
        execution_id=f"exec-{task_id}",
        env_vars={"OZ_PROJECT": "bench"},
    )


async def _echo(request: tws.WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except tws.ConnectionClosed:
        pass


async def _serve_echo(*, task_status: trio.TaskStatus[tws.WebSocketServer]) -> None:
    await tws.serve_websocket(
        _echo,
        "127.0.0.1",
        0,
        ssl_context=None,
        max_message_size=16 * 1024 * 1024,
        task_status=task_status,
    )


async def _echo_round_trip(ws: tws.WebSocketConnection, frame: str) -> float:
    started = time.perf_counter()
    await ws.send_message(frame)
    await ws.get_message()
    return time.perf_counter() - started


async def _echo_burst(ws: tws.WebSocketConnection, frame: str, count: int) -> float:
    started = time.perf_counter()

    async def receive_all() -> None:
        for _ in range(count):
            await ws.get_message()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_all)
        for _ in range(count):
            await ws.send_message(frame)
    return (time.perf_counter() - started) / count


async def _worker_burst(session: Session, prefix: str, count: int) -> tuple[float, float]:
    """(wall, CPU) seconds per task for ``count`` assignments sent at once."""
    ids = [f"{prefix}-{i}" for i in range(count)]
    # Encoded beforehand, as the echo's frame is: the server's encoding is not the worker's.
    frames = [encode_message(assignment(task_id)) for task_id in ids]
    started, cpu = time.perf_counter(), time.process_time()
    for task_id, frame in zip(ids, frames, strict=True):
        session.probe.mark(task_id, "sent")
        await session.server.send(frame)
    for task_id in ids:
        await session.probe.wait(task_id, "terminal")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    failed = [task_id for task_id in ids if task_id in session.probe.failures]
    if failed:
        raise RuntimeError(f"{len(failed)} trivial task(s) failed, e.g. {failed[0]}")
    return elapsed / count, cpu / count


def bench_scale(count: int, burst_size: int, bursts: int) -> list[Row]:
    sequential = Row(f"scale: {count} tasks, one at a time", throughput=True)
    burst = Row(f"scale: {burst_size} tasks, all at once", throughput=True)
    cpu: list[tuple[float, float]] = []
    frame = encode_message(assignment("run-00000000-0000-0000-0000-000000000000"))

    async def body(session: Session) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(_serve_echo)
            url = f"ws://127.0.0.1:{server.port}/echo"
            async with tws.open_websocket_url(url, max_message_size=16 * 1024 * 1024) as ws:
                for i in range(20):  # warm-up
                    await run_one(session, assignment(f"warm-{i}"))
                    await _echo_round_trip(ws, frame)
                total_started = time.perf_counter()
                for i in range(count):
                    marks = await run_one(session, assignment(f"seq-{i}"))
                    sequential.worker.append(marks["terminal"] - marks["sent"])
                    sequential.baseline.append(await _echo_round_trip(ws, frame))
                total = time.perf_counter() - total_started
                for r in range(bursts):
                    wall, worker_cpu = await _worker_burst(session, f"burst{r}", burst_size)
                    burst.worker.append(wall)
                    echo_cpu = time.process_time()
                    burst.baseline.append(await _echo_burst(ws, frame, burst_size))
                    cpu.append((worker_cpu, (time.process_time() - echo_cpu) / burst_size))
            nursery.cancel_scope.cancel()
        worker_total = sum(sequential.worker)
        sequential.note = (
            f"worker {worker_total:.2f}s total, {count / worker_total:,.0f} tasks/s; "
            f"echo {sum(sequential.baseline):.3f}s total "
            f"(both interleaved: {total:.2f}s wall)"
        )
        per_task = median(burst.worker)
        cpu_ratio = median([echo / worker for worker, echo in cpu])
        burst.note = (
            f"{bursts} burst(s) of {burst_size}; median burst {per_task * burst_size:.2f}s, "
            f"{1 / per_task:,.0f} tasks/s: {1 / burst.ratio:.2f}x the echo's rate "
            f"({cpu_ratio:.2f}x in CPU time, which other processes do not inflate)"
        )

    run_trio(lambda: with_worker(InstantBackend(), None, body, worker_id="bench-scale"))
    return [sequential, burst]
