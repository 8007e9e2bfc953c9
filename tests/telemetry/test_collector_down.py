"""A collector that dies or freezes changes nothing about the tasks: they run and report as usual,
the worker logs one warning line per period, export resumes when the collector comes
back, and a dead collector does not hold up the worker's stop beyond its deadline."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
import trio

from ozw.config import WorkerConfig
from ozw.dev.server import DispatchServer
from ozw.telemetry.export import FLUSH_DEADLINE
from ozw.telemetry.otel_env import read_plan
from ozw.wire.codec import TaskCancellation, TaskRejected
from ozw.worker import Worker
from tests.support.log_lines import Lines
from tests.support.scripted_backend import ScriptedBackend
from tests.support.worker import API_KEY, assignment, fast_settings, start_server, terminal_for
from tests.telemetry.collector import Collector, attributes, spans_of
from tests.telemetry.test_otlp import last_values

SUCCEEDED = ("oz_worker_tasks_completed_total", (("result", "succeeded"),))


async def received(collector: Collector, succeeded: int, task_id: str | None = None) -> None:
    """Wait until the collector has written ``succeeded`` completed tasks (and the span
    of ``task_id``). The collector's file is the one signal there is: it is polled."""
    while True:
        batches = collector.received()
        done = last_values(batches).get(SUCCEEDED, 0) >= succeeded
        spans = {s["name"] for _, _, s in spans_of(batches)} if task_id else set()
        if done and (task_id is None or "oz_worker.task" in spans):
            return
        await trio.sleep(0.05)


def otel_worker(
    collector: Collector,
    server_url: str,
    backend: ScriptedBackend,
    monkeypatch: pytest.MonkeyPatch,
    max_concurrent_tasks: int = 0,
) -> Worker:
    """A worker pushing metrics and traces over OTLP/HTTP to ``collector`` every 200ms."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_TRACES_EXPORTER": "otlp",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Worker(
        WorkerConfig(worker_id="w1", api_key=API_KEY, max_concurrent_tasks=max_concurrent_tasks),
        backend,
        connection_settings=fast_settings(server_url),
        otel=read_plan(os.environ),
    )


async def start(nursery: trio.Nursery, worker: Worker) -> trio.Event:
    """Run ``worker`` in ``nursery``; the event is set once its run has returned."""
    stopped = trio.Event()

    async def run(*, task_status: trio.TaskStatus[Worker]) -> None:
        await worker.run(handle_signals=False, task_status=task_status)
        stopped.set()

    await nursery.start(run)
    return stopped


async def launch(
    nursery: trio.Nursery,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
    max_concurrent_tasks: int = 0,
) -> tuple[DispatchServer, ScriptedBackend, Worker, trio.Event]:
    """Start ``collector``, a dispatch server and a worker pushing to the collector; the
    event is set once the worker's run has returned."""
    await nursery.start(collector.run)
    server = await start_server(nursery)
    backend = ScriptedBackend()
    worker = otel_worker(collector, server.url, backend, monkeypatch, max_concurrent_tasks)
    return server, backend, worker, await start(nursery, worker)


async def test_a_dead_collector_changes_nothing_about_the_tasks(
    otelcol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: Lines
) -> None:
    collector = Collector(otelcol, tmp_path)
    async with trio.open_nursery() as nursery:
        server, _, worker, stopped = await launch(nursery, collector, monkeypatch)
        with trio.fail_after(30):
            await worker.connection.wait_connected()
            await server.send(assignment("before"))
            await server.wait_for(terminal_for("before"))
            await received(collector, 1, "before")

            collector.kill()  # no goodbye: its ports stop answering
            for task_id in ("during-1", "during-2", "during-3"):
                await server.send(assignment(task_id))
                await server.wait_for(terminal_for(task_id))
            # The exporters fail again and again (the SDK's records, counted by the
            # handler); the worker's log has one line for it in the period.
            sdk = logging.getLogger("opentelemetry")
            (handler,) = [h for h in sdk.handlers if hasattr(h, "left_out")]
            while handler.left_out < 3:  # noqa: ASYNC110 (no event for an SDK thread's log)
                await trio.sleep(0.05)
            warned = [r for r in lines.records if r.getMessage().startswith("telemetry export:")]
            assert len(warned) == 1
            assert warned[0].exc_info is None
            assert "\n" not in warned[0].getMessage()
            assert worker.connection.failed_attempts == 0

            collector = Collector(otelcol, tmp_path, ports=collector)
            await nursery.start(collector.run)
            await server.send(assignment("after"))
            await server.wait_for(terminal_for("after"))
            # Export resumed: the counts include the tasks of the outage.
            await received(collector, 5, "after")

            collector.kill()  # dead again for the stop: it must not hold the worker up
        with trio.fail_after(FLUSH_DEADLINE + 10):
            worker.request_stop("test over")
            await stopped.wait()
        nursery.cancel_scope.cancel()


async def test_cancelled_and_rejected_tasks_spans(
    otelcol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector(otelcol, tmp_path)
    async with trio.open_nursery() as nursery:
        server, backend, worker, stopped = await launch(nursery, collector, monkeypatch, 1)
        with trio.fail_after(30):
            await server.send(assignment("stop-me", "block"))
            await backend.started["stop-me"].wait()
            await server.send(assignment("too-many"))
            await server.wait_for(lambda m: isinstance(m, TaskRejected))
            await server.send(TaskCancellation("stop-me"))
            await server.wait_for(terminal_for("stop-me"))
            worker.request_stop("test over")
            await stopped.wait()  # flushed at its stop
        nursery.cancel_scope.cancel()
    spans = [span for _, _, span in spans_of(collector.received())]
    roots = {attributes(s)["task.id"]: s for s in spans if s["name"] == "oz_worker.task"}
    rejected = [(e["name"], attributes(e)) for e in roots["too-many"]["events"]]
    assert rejected[1:] == [("task.rejected", {"reason": "at_capacity"})]
    root = roots["stop-me"]
    assert root["status"] == {"code": 1}
    events = {e["name"]: attributes(e) for e in root["events"]}
    assert events["task.cancellation_requested"] == {"source": "server", "task.id": "stop-me"}
    assert "task.cancelled" in events
    (execute,) = [s for s in spans if s["name"] == "execute"]
    assert [e["name"] for e in execute["events"]] == ["phase.stopped"]


async def test_a_frozen_collector_holds_up_neither_tasks_nor_the_stop(
    otelcol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector(otelcol, tmp_path)
    async with trio.open_nursery() as nursery:
        server, _, worker, stopped = await launch(nursery, collector, monkeypatch)
        collector.signal(signal.SIGSTOP)  # a collector that accepts and never answers
        try:
            with trio.fail_after(30):
                for task_id in ("slow-1", "slow-2"):
                    await server.send(assignment(task_id))
                    await server.wait_for(terminal_for(task_id))
            with trio.fail_after(FLUSH_DEADLINE + 10):
                worker.request_stop("test over")
                await stopped.wait()
        finally:
            collector.signal(signal.SIGCONT)
        nursery.cancel_scope.cancel()
    assert worker.connection.failed_attempts == 0
