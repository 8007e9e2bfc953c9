"""Metrics and health over real HTTP while a worker runs against the local dispatch server."""

from __future__ import annotations

import pytest
import trio

from ozw.config import parse_address
from ozw.protocol import TaskCancellation, TaskRejected
from tests.scripted_backend import ScriptedBackend
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
            await server.send(assignment("bad", "fail:2"))
            await server.wait_for(terminal_for("ok1"))
            await server.wait_for(terminal_for("bad"))
            await server.send(assignment("a", "block"))
            await server.send(assignment("b", "block"))
            await backend.started["a"].wait()
            await backend.started["b"].wait()
            await server.send(assignment("c"))
            await server.wait_for(lambda m: isinstance(m, TaskRejected))
            status, body = await http_get(port, "/metrics")
            assert status == 200
            assert sample(body, "oz_worker_connected") == 1
            assert sample(body, "oz_worker_tasks_active") == 2
            assert sample(body, "oz_worker_tasks_max_concurrent") == 2
            assert (
                'oz_worker_tasks_rejected_total{reason="worker at maximum concurrency"} 1.0' in body
            )
            assert 'oz_worker_tasks_completed_total{result="completed"} 1.0' in body
            assert 'oz_worker_tasks_completed_total{result="failed"} 1.0' in body
            assert (
                'oz_worker_task_failures_total{phase="execute",reason="agent_invocation"} 1.0'
                in body
            )
            assert 'oz_worker_task_duration_seconds_count{result="completed"} 1.0' in body
            assert 'oz_worker_info{backend="scripted",version="' in body
            assert 'worker_id="w1"' in body
            await server.send(TaskCancellation("a"))
            await server.wait_for(terminal_for("a"))
            server_scope.cancel()  # the dispatch server goes away
            await worker.connection.wait_connected(False)
            status, _ = await http_get(port, "/healthz")
            assert status == 503
            status, body = await http_get(port, "/metrics")
            assert sample(body, "oz_worker_connected") == 0
            assert sample(body, "oz_worker_tasks_active") == 1
            assert 'oz_worker_websocket_reconnects_total{reason="closed"} 1.0' in body
            assert (await http_get(port, "/nope"))[0] == 404
        nursery.cancel_scope.cancel()


async def test_a_client_resetting_mid_request_does_not_hurt_the_worker() -> None:
    import socket
    import struct

    backend = ScriptedBackend()
    async with running_worker(backend, metrics_addr="127.0.0.1:0") as local:
        server, worker = local.server, local.worker
        port = worker.metrics_port
        assert port is not None
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
    from ozw.failures import StartupError
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
