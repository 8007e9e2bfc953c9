"""Prometheus metrics and the health endpoint.

:class:`WorkerMetrics` exports exactly the Go worker's catalog (docs/protocol.md), every
known series present at 0 from start-up, so existing dashboards and alerts work. It
owns its own registry (not the process-global one), so tests and the demo can run
several workers side by side. :func:`serve_http` is a tiny
HTTP/1.1 server on Trio for ``/metrics`` and ``/healthz``: a liveness probe gets
200 while the worker is connected to the dispatch server and 503 otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from importlib import metadata
from typing import Final

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ozw.config import parse_address
from ozw.link.connection import DIAL_FAILED, REMOTE_CLOSE
from ozw.tasks.failures import FailureReason
from ozw.tasks.lifecycle import TaskOutcome, TaskPhase, TaskResult
from ozw.tasks.params import TaskParams
from ozw.wire.codec import REJECT_AT_CAPACITY, REJECT_SHUTTING_DOWN

# The *_created series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

log = logging.getLogger(__name__)

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, float("inf"))
"""Agent runs last seconds to hours."""


RESULT_LABELS: Final = {
    TaskResult.COMPLETED: "succeeded",
    TaskResult.FAILED: "failed",
    TaskResult.CANCELLED: "cancelled",
    TaskResult.HANDED_OFF: "dispatched",
}
REJECT_LABELS: Final = {REJECT_AT_CAPACITY: "at_capacity", REJECT_SHUTTING_DOWN: "shutting_down"}
FAILURE_PHASES: Final = ("assignment", "backend", "cleanup")
CLEANUP_FAILURE: Final = ("cleanup", FailureReason.CLEANUP.value)
"""The (phase, reason) of a failed teardown."""
RECONNECT_REASONS: Final = (DIAL_FAILED, REMOTE_CLOSE)


def failure_phase(phase: TaskPhase) -> str:
    """The metric phase of a failure that ended a task in ``phase``: before the backend
    took it (a waiting execution) it is the assignment's, otherwise the backend's."""
    return "assignment" if phase is TaskPhase.PENDING else "backend"


def ozw_version() -> str:
    try:
        return metadata.version("ozw")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class WorkerMetrics:
    """Every metric the worker exports, registered in a private registry."""

    def __init__(self, *, worker_id: str, backend: str, max_concurrent: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connected = Gauge(
            "oz_worker_connected", "1 while connected to the dispatch server", registry=r
        )
        self.tasks_active = Gauge("oz_worker_tasks_active", "Tasks running now", registry=r)
        self.max_concurrent = Gauge(
            "oz_worker_tasks_max_concurrent", "Configured task limit (0 = unlimited)", registry=r
        )
        self.claimed = Counter("oz_worker_tasks_claimed", "Executions claimed", registry=r)
        self.rejected = Counter(
            "oz_worker_tasks_rejected", "Assignments rejected", ["reason"], registry=r
        )
        self.completed = Counter(
            "oz_worker_tasks_completed",
            "Executions ended, by result (succeeded, failed, cancelled, dispatched)",
            ["result"],
            registry=r,
        )
        self.duration = Histogram(
            "oz_worker_task_duration_seconds",
            "Task duration from claim to end of teardown",
            ["result"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.failures = Counter(
            "oz_worker_task_failures",
            "Task failures by phase and reason",
            ["phase", "reason"],
            registry=r,
        )
        self.reconnects = Counter(
            "oz_worker_websocket_reconnects",
            "Failed dials (dial_failed) and sessions that ended (remote_close)",
            ["reason"],
            registry=r,
        )
        self.info = Info("oz_worker", "Worker build and identity", registry=r)
        self.info.info({"version": ozw_version(), "backend": backend, "worker_id": worker_id})
        # Known label values start at 0, so dashboards see every series from the start;
        # their children are kept, so a task's end looks none up by its labels.
        for label in REJECT_LABELS.values():
            self.rejected.labels(reason=label)
        self._completed = {
            label: (self.completed.labels(result=label), self.duration.labels(result=label))
            for label in RESULT_LABELS.values()
        }
        self._failures = {
            (phase, reason.value): self.failures.labels(phase=phase, reason=reason.value)
            for phase in FAILURE_PHASES
            for reason in FailureReason
        }
        for kind in RECONNECT_REASONS:
            self.reconnects.labels(reason=kind)
        self.max_concurrent.set(max_concurrent)
        self.connected.set(0)
        self.tasks_active.set(0)

    # Hooks the worker calls -------------------------------------------------------

    def on_claimed(self, _params: TaskParams) -> None:
        self.claimed.inc()
        self.tasks_active.inc()

    def on_rejected(self, _task_id: str, reason: str) -> None:
        self.rejected.labels(reason=REJECT_LABELS.get(reason, reason)).inc()

    def on_finished(self, _params: TaskParams, outcome: TaskOutcome, duration: float) -> None:
        self.tasks_active.dec()
        if outcome.result is TaskResult.DETACHED:
            return  # not ended: the worker's next start reattaches and reports it
        completed, durations = self._completed[RESULT_LABELS[outcome.result]]
        completed.inc()
        durations.observe(duration)
        if outcome.reason is not None:
            self._failures[failure_phase(outcome.phase), outcome.reason.value].inc()
        if outcome.teardown_failed:
            self._failures[CLEANUP_FAILURE].inc()

    def on_connection(self, connected: bool, _why: str) -> None:
        self.connected.set(1 if connected else 0)

    def on_lost(self, why: str) -> None:
        """A failed dial or an ended session (see :attr:`Connection.on_lost`)."""
        self.reconnects.labels(reason=why).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def bind_http(address: str) -> list[trio.SocketListener]:
    """Listen on ``HOST:PORT`` for :func:`serve_http`.

    Raises:
        OSError: the address cannot be bound (e.g. the port is taken).
    """
    host, port = parse_address(address)
    return await trio.open_tcp_listeners(port, host=host)


async def serve_http(
    metrics: WorkerMetrics,
    health_problem: Callable[[], str | None],
    listeners: list[trio.SocketListener],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` and ``/healthz`` until cancelled; reports the bound port.

    ``health_problem`` says why the worker is unhealthy (the 503's body), None if it is not.
    """

    async def answer(stream: trio.SocketStream) -> None:
        request = await _read_request_head(stream)
        if request is None:
            return
        method, path = request
        head_only = method == "HEAD"
        match method, path.split("?")[0]:
            case (("GET" | "HEAD"), "/metrics"):
                await _respond(stream, 200, metrics.render(), head_only, CONTENT_TYPE_LATEST)
            case (("GET" | "HEAD"), "/healthz"):
                problem = health_problem()
                if problem is None:
                    await _respond(stream, 200, b"ok\n", head_only)
                else:
                    await _respond(stream, 503, f"{problem}\n".encode(), head_only)
            case (("GET" | "HEAD"), _):
                await _respond(stream, 404, b"not found\n", head_only)
            case _:
                await _respond(stream, 405, b"method not allowed\n", head_only)

    async def handle(stream: trio.SocketStream) -> None:
        # A client that resets or stalls is its own problem, never the worker's.
        try:
            async with stream:
                with trio.move_on_after(10):
                    await answer(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("metrics client went away: %s", exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        host, bound = listeners[0].socket.getsockname()[:2]
        log.info("metrics on http://%s:%d/metrics, health on /healthz", host, bound)
        task_status.started(bound)


async def _read_request_head(stream: trio.SocketStream) -> tuple[str, str] | None:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > 16384:
            return None
    first = data.split(b"\n", 1)[0].decode("latin-1").strip().split()
    if len(first) < 2:
        return None
    return first[0], first[1]


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def _respond(
    stream: trio.SocketStream,
    status: int,
    body: bytes,
    head_only: bool,
    content_type: str = "text/plain; charset=utf-8",
) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(head if head_only else head + body)
