"""The cost of a reconnect with results owed (issue 14 item 4).

Worker side: N tasks of a gated backend are claimed, the dispatch server drops the
connection, the gate opens and all N finish while the worker is offline, so N
``task_completed`` messages wait in its outbox. Then the worker redials (its
back-off cut short, as when results are owed at shutdown). The time is from the
server accepting the new connection to the server having read the N-th result.

Baseline: a fresh WebSocket connection to a plain server on 127.0.0.1 that sends the
same N ``task_completed`` frames (already encoded); from the server accepting the
connection to its reading the N-th frame.

Each sample is total time / N; one sample per repeat.
"""

from __future__ import annotations

import time
from typing import ClassVar

import trio
import trio_websocket as tws

from bench.harness import Session, run_trio, with_worker
from bench.stats import Row
from ozw.backends.base import Backend, ExecuteResult, TaskRun
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog
from ozw.wire.codec import Task, TaskAssignment, TaskCompleted, encode_message


class GatedRun(TaskRun):
    def __init__(self, params: TaskParams, log: TaskLog, gate: trio.Event) -> None:
        super().__init__(params, log)
        self.gate = gate

    async def setup(self) -> None:
        pass

    async def execute(self) -> ExecuteResult:
        await self.gate.wait()
        return ExecuteResult.COMPLETED

    async def teardown(self) -> None:
        pass


class GatedBackend(Backend):
    """Every task runs until the current gate opens."""

    name: ClassVar[str] = "gated"

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()

    def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
        return GatedRun(params, log, self.gate)


def assignment(task_id: str) -> TaskAssignment:
    return TaskAssignment(
        task_id,
        Task(id=task_id, title="owed", raw={"id": task_id, "title": "owed"}),
        execution_id=f"exec-{task_id}",
    )


async def _owed_results(session: Session, backend: GatedBackend, prefix: str, count: int) -> float:
    """One repeat on the worker; returns seconds per result."""
    ids = [f"{prefix}-{i}" for i in range(count)]
    server, worker, probe = session.server, session.worker, session.probe
    backend.gate = trio.Event()
    for task_id in ids:
        await server.send(assignment(task_id))
    for task_id in ids:
        await probe.wait(task_id, "claimed")
    # Everything sent so far confirmed: what is owed after the drop is the results only.
    await worker.outbox.wait_empty()
    server.drop_connections()
    await worker.connection.wait_connected(False)
    backend.gate.set()
    for task_id in ids:
        await probe.wait(task_id, "finished")  # its result is queued in the outbox
    owed = sum(isinstance(m, TaskCompleted) for m in worker.outbox.pending)
    if owed < count:
        raise RuntimeError(f"only {owed} of {count} results were owed at the reconnect")
    worker.connection.redial_now()
    await server.wait_connected()
    accepted = time.perf_counter()
    for task_id in ids:
        await probe.wait(task_id, "terminal")
    return (max(probe.marks[task_id]["terminal"] for task_id in ids) - accepted) / count


async def _fresh_connection(count: int) -> float:
    """Baseline: seconds per frame, accept → N-th frame read, on a fresh connection."""
    frame = encode_message(TaskCompleted("run-00000000-0000-0000-0000-000000000000", "done"))
    accepted, last = trio.Event(), trio.Event()
    times: dict[str, float] = {}

    async def handler(request: tws.WebSocketRequest) -> None:
        ws = await request.accept()
        times["accepted"] = time.perf_counter()
        accepted.set()
        for _ in range(count):
            await ws.get_message()
        times["last"] = time.perf_counter()
        last.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: tws.serve_websocket(
                handler, "127.0.0.1", 0, ssl_context=None, task_status=task_status
            )
        )
        async with tws.open_websocket_url(f"ws://127.0.0.1:{server.port}/results") as ws:
            for _ in range(count):
                await ws.send_message(frame)
            await last.wait()
        nursery.cancel_scope.cancel()
    return (times["last"] - times["accepted"]) / count


def bench_reconnect(count: int, repeats: int) -> list[Row]:
    row = Row(f"reconnect: {count} results owed", throughput=True)
    backend = GatedBackend()

    async def body(session: Session) -> None:
        # Warm-up: one small round of the whole path.
        await _owed_results(session, backend, "warm", 10)
        for r in range(repeats):
            row.worker.append(await _owed_results(session, backend, f"owed{r}", count))
            row.baseline.append(await _fresh_connection(count))

    # A long back-off: the worker stays offline until the benchmark redials it.
    timings = {"backoff_initial": 3600.0, "backoff_max": 3600.0}
    run_trio(lambda: with_worker(backend, None, body, worker_id="bench-reconnect", timings=timings))
    total = row.worker and sorted(row.worker)[len(row.worker) // 2] * count
    row.note = (
        f"worker: server accepts the redial → reads the {count}th owed task_completed "
        f"(median {total:.2f}s); base: accept → {count}th frame on a fresh connection"
    )
    return [row]
