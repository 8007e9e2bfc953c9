"""Metrics and health over real HTTP while a worker runs against the local dispatch server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from ozw.backends.base import Backend
from ozw.config import parse_address
from ozw.dev.server import DispatchServer
from ozw.tasks.failures import FailureReason
from ozw.wire.codec import TaskCancellation, TaskRejected
from ozw.worker import Worker
from tests.support.scripted_backend import ScriptedBackend
from tests.support.worker import (
    assignment,
    running_worker,
    start_stoppable_server,
    start_worker,
    terminal_for,
)


async def http_get(port: int, path: str) -> tuple[int, str]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def sample(body: str, name: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + " ") or (
            line.startswith(name + "{") and line.split(" ")[0] == name
        ):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{body}")


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, by name and sorted labels (less the scope's
    ``otel_scope_*``, the same on every series: see the start-up test)."""
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return {
        (
            s.name,
            tuple(sorted((k, v) for k, v in s.labels.items() if k not in SCOPE_LABELS)),
        ): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


SCOPE_LABELS = {"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}


BACKEND_AGENT_INVOCATION = (("phase", "backend"), ("reason", "agent_invocation"))
RECONNECT_DIAL_FAILED = ("oz_worker_websocket_reconnects_total", (("reason", "dial_failed"),))
RECONNECT_REMOTE_CLOSE = ("oz_worker_websocket_reconnects_total", (("reason", "remote_close"),))


@asynccontextmanager
async def metrics_worker(backend: Backend) -> AsyncIterator[tuple[DispatchServer, Worker, int]]:
    """A worker serving ``/metrics`` on a free port: its server, itself and that port."""
    async with running_worker(backend, metrics_addr="127.0.0.1:0") as local:
        port = local.worker.metrics_port
        assert port is not None
        yield local.server, local.worker, port


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9090") == ("127.0.0.1", 9090)
    assert parse_address(":9090") == ("0.0.0.0", 9090)
    assert parse_address("[::1]:80") == ("::1", 80)
    for bad in ["9090", "host:", "host:x", "h:70000"]:
        with pytest.raises(ValueError, match="is not HOST:PORT"):
            parse_address(bad)


async def test_metrics_and_health_follow_the_worker() -> None:
    backend = ScriptedBackend()
    async with trio.open_nursery() as nursery:
        server, server_scope = await start_stoppable_server(nursery)
        worker = await start_worker(
            nursery,
            server.url,
            backend,
            max_concurrent_tasks=2,
            metrics_addr="127.0.0.1:0",
        )
        port = worker.metrics_port
        assert port is not None
        with trio.fail_after(10):
            await worker.connection.wait_connected()
            assert (await http_get(port, "/healthz"))[0] == 200
            await server.send(assignment("ok1"))
            await server.send(assignment("ok1"))  # a repeat: claimed again, not counted
            await server.send(assignment("bad", "fail:2"))
            await server.wait_for(terminal_for("ok1"))
            await server.wait_for(terminal_for("bad"))
            await server.send(assignment("a", "block"))
            await server.send(assignment("b", "block"))
            await backend.started["a"].wait()
            await backend.started["b"].wait()
            await server.send(assignment("c"))
            await server.wait_for(lambda m: isinstance(m, TaskRejected))
            series = await scrape(port)
            assert series[("oz_worker_connected", ())] == 1
            assert series[("oz_worker_tasks_active", ())] == 2
            assert series[("oz_worker_tasks_max_concurrent", ())] == 2
            assert series[("oz_worker_tasks_claimed_total", ())] == 4
            assert series[("oz_worker_tasks_rejected_total", (("reason", "at_capacity"),))] == 1
            assert series[("oz_worker_tasks_completed_total", (("result", "succeeded"),))] == 1
            assert series[("oz_worker_tasks_completed_total", (("result", "failed"),))] == 1
            failed = ("oz_worker_task_failures_total", BACKEND_AGENT_INVOCATION)
            assert series[failed] == 1
            count = ("oz_worker_task_duration_seconds_count", (("result", "succeeded"),))
            assert series[count] == 1
            await server.send(TaskCancellation("a"))
            await server.wait_for(terminal_for("a"))
            server_scope.cancel()  # the dispatch server goes away
            await worker.connection.wait_connected(False)
            status, _ = await http_get(port, "/healthz")
            assert status == 503
            # Every failed dial counts, not only the first loss.
            for _ in range(3):
                await worker.connection.wait_failed_attempt()
            before = worker.connection.failed_attempts
            series = await scrape(port)
            after = worker.connection.failed_attempts
            assert series[("oz_worker_connected", ())] == 0
            assert series[("oz_worker_tasks_active", ())] == 1
            assert series[("oz_worker_tasks_completed_total", (("result", "cancelled"),))] == 1
            assert series[RECONNECT_REMOTE_CLOSE] == 1
            assert before <= 1 + series[RECONNECT_DIAL_FAILED] <= after
            assert series[RECONNECT_DIAL_FAILED] >= 3
            assert (await http_get(port, "/nope"))[0] == 404
        nursery.cancel_scope.cancel()


async def test_a_client_resetting_mid_request_does_not_hurt_the_worker() -> None:
    import socket
    import struct

    backend = ScriptedBackend()
    async with metrics_worker(backend) as (server, _, port):
        with trio.fail_after(10):
            for _ in range(3):
                sock = trio.socket.socket()
                await sock.connect(("127.0.0.1", port))
                await sock.send(b"GET /metr")
                # SO_LINGER 0: close with a TCP reset, as a timed-out probe may.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            status, _ = await http_get(port, "/metrics")
            assert status == 200
            await server.send(assignment("still-fine"))
            await server.wait_for(terminal_for("still-fine"))


async def test_a_busy_metrics_port_stops_the_worker_with_one_clear_line() -> None:
    from ozw.config import WorkerConfig
    from ozw.tasks.failures import StartupError
    from ozw.worker import Worker

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    busy = listener.getsockname()[1]
    try:
        worker = Worker(
            WorkerConfig(worker_id="w1", api_key="k", metrics_addr=f"127.0.0.1:{busy}"),
            ScriptedBackend(),
        )
        with pytest.raises(StartupError) as caught:
            await worker.run(handle_signals=False)
        assert (
            str(caught.value) == f"cannot serve metrics on 127.0.0.1:{busy}: Address already in use"
        )
    finally:
        listener.close()


CATALOG = {
    "target_info",
    "oz_worker_connected",
    "oz_worker_tasks_active",
    "oz_worker_tasks_max_concurrent",
    "oz_worker_tasks_claimed_total",
    "oz_worker_tasks_rejected_total",
    "oz_worker_tasks_completed_total",
    "oz_worker_task_failures_total",
    "oz_worker_websocket_reconnects_total",
    "oz_worker_info",
}
"""docs/protocol.md at start-up, as Prometheus exposes it: the duration histogram
appears with the first task (primed as Go primes it: a 0s sample would skew it)."""


async def test_every_series_of_the_catalog_is_there_at_zero_from_start_up() -> None:
    async with metrics_worker(ScriptedBackend()) as (_, _, port):
        with trio.fail_after(10):
            series = await scrape(port)
            _, body = await http_get(port, "/metrics")
    assert {name for name, _ in series} == CATALOG
    scopes = {
        (s.labels.get("otel_scope_name"), s.labels.get("otel_scope_version"))
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name != "target_info"
    }
    assert scopes == {("github.com/warpdotdev/oz-agent-worker", "")}  # the Go worker's
    for result in ("succeeded", "failed", "cancelled", "dispatched"):
        assert series[("oz_worker_tasks_completed_total", (("result", result),))] == 0
    # Go primes at_capacity only; shutting_down (ozw's) appears when it happens.
    assert [labels for name, labels in series if name == "oz_worker_tasks_rejected_total"] == [
        (("reason", "at_capacity"),)
    ]
    assert series[("oz_worker_tasks_rejected_total", (("reason", "at_capacity"),))] == 0
    failures = {labels for name, labels in series if name == "oz_worker_task_failures_total"}
    assert failures == {
        (("phase", phase), ("reason", reason.value))
        for phase in ("assignment", "backend", "cleanup")
        for reason in FailureReason
    }
    assert all(series[("oz_worker_task_failures_total", labels)] == 0 for labels in failures)
    assert {"job_create", "evicted", "active_deadline", "cleanup"} <= {
        r.value for r in FailureReason
    }
    assert series[RECONNECT_DIAL_FAILED] == 0
    assert series[RECONNECT_REMOTE_CLOSE] == 0
    assert series[("oz_worker_tasks_claimed_total", ())] == 0
    info = [labels for name, labels in series if name == "oz_worker_info"]
    assert len(info) == 1
    assert dict(info[0])["backend"] == "scripted"
    assert dict(info[0])["worker_id"] == "w1"
    assert series[("oz_worker_info", info[0])] == 1


async def test_teardown_waiting_execution_and_stopping_failures_have_go_labels() -> None:
    backend = ScriptedBackend()
    async with metrics_worker(backend) as (server, worker, port):
        with trio.fail_after(10):
            await server.send(assignment("clean", "teardown-fail"))
            await server.wait_for(terminal_for("clean"))
            # A run whose first execution's teardown hangs; its follow-up waits.
            await server.send(assignment("run", "slow-teardown", execution_id="e1"))
            await backend.started["run"].wait()
            await server.send(assignment("run", "ok", execution_id="e2"))
            await server.wait_until(lambda: len(server.messages_for("run")) == 2)
            worker.request_stop("test")
            await server.send(assignment("late"))
            await server.wait_for(lambda m: isinstance(m, TaskRejected))
            # The waiting execution ends at once; the first is still in its teardown.
            await server.wait_for(terminal_for("run"))
            series = await scrape(port)
            backend.gates["run"].set()
        cleanup = (("phase", "cleanup"), ("reason", "cleanup"))
        assert series[("oz_worker_task_failures_total", cleanup)] == 1
        assert series[("oz_worker_tasks_completed_total", (("result", "succeeded"),))] == 1
        waiting = (("phase", "assignment"), ("reason", "graceful_shutdown"))
        assert series[("oz_worker_task_failures_total", waiting)] == 1
        assert series[("oz_worker_tasks_rejected_total", (("reason", "shutting_down"),))] == 1
        assert series[("oz_worker_tasks_claimed_total", ())] == 3
