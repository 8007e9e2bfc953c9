"""The worker's metrics on the OpenTelemetry SDK, and the health endpoint.

:class:`WorkerMetrics` holds exactly the Go worker's instruments (its
``internal/metrics``: names, units, descriptions, attribute sets, the scope name)
in one ``MeterProvider`` with the Go worker's resource, primed as Go primes them
(every known series at 0 from start-up; the duration histogram left empty). Its
readers are the OTLP/console exporters the OTEL_* variables ask for
(:mod:`ozw.telemetry.export`) and always a Prometheus reader into a private
registry, which ``metrics_addr`` and ``OTEL_METRICS_EXPORTER=prometheus`` both
serve: one metrics path. The registry is private (not the process-global one), so
tests and the demo can run several workers side by side. :func:`serve_http` is a
tiny HTTP/1.1 server on Trio for ``/metrics`` and ``/healthz``: a liveness probe
gets 200 while the worker is connected to the dispatch server and 503 otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Final

import trio
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.version import __version__ as sdk_version
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ozw.config import parse_address
from ozw.link.connection import DIAL_FAILED, REMOTE_CLOSE
from ozw.tasks.failures import FailureReason
from ozw.tasks.lifecycle import TaskOutcome, TaskResult
from ozw.tasks.params import TaskParams
from ozw.wire.messages import REJECT_LABELS

log = logging.getLogger(__name__)

SCOPE_NAME: Final = "github.com/warpdotdev/oz-agent-worker"
"""The Go worker's instrumentation scope (``otel_scope_name`` in Prometheus)."""
SERVICE_NAME: Final = "oz-agent-worker"
"""The Go worker's ``service.name``; like Go's, it wins over ``OTEL_SERVICE_NAME``."""

RESULT_LABELS: Final = {
    TaskResult.COMPLETED: "succeeded",
    TaskResult.FAILED: "failed",
    TaskResult.CANCELLED: "cancelled",
    TaskResult.HANDED_OFF: "dispatched",
}
PRIMED_REJECT: Final = "at_capacity"
"""The one rejection reason Go primes (``shutting_down`` appears when it happens)."""
FAILURE_PHASES: Final = ("assignment", "backend", "cleanup")
CLEANUP_FAILURE: Final = ("cleanup", FailureReason.CLEANUP.value)
"""The (phase, reason) of a failed teardown."""
RECONNECT_REASONS: Final = (DIAL_FAILED, REMOTE_CLOSE)


GO_INSTRUMENTS: Final = {
    # name: (unit, description), the Go worker's word for word.
    "oz_worker_connected": (
        "",
        "1 while the worker has an active WebSocket connection to warp-server, 0 otherwise.",
    ),
    "oz_worker_tasks_active": ("", "Number of tasks the worker is currently executing."),
    "oz_worker_tasks_max_concurrent": (
        "",
        "Configured upper bound on concurrent tasks for this worker. 0 means unlimited.",
    ),
    "oz_worker_tasks_claimed_total": (
        "",
        "Total tasks the worker has claimed since process start.",
    ),
    "oz_worker_tasks_rejected_total": (
        "",
        "Total tasks the worker has rejected since process start.",
    ),
    "oz_worker_tasks_completed_total": (
        "",
        "Total tasks the worker has finished, labeled by terminal result.",
    ),
    "oz_worker_task_duration_seconds": (
        "s",
        "Wall-clock duration of task execution on the worker, labeled by terminal result.",
    ),
    "oz_worker_task_failures_total": (
        "",
        "Task failures labeled by bounded execution phase and reason.",
    ),
    "oz_worker_websocket_reconnects_total": (
        "",
        "Total WebSocket reconnect attempts since process start.",
    ),
    "oz_worker_info": ("", "Constant 1 with build/runtime metadata as labels."),
}


def go_instrument(name: str) -> tuple[str, str, str]:
    """The Go worker's instrument ``name``: name, unit, description."""
    unit, description = GO_INSTRUMENTS[name]
    return name, unit, description


def ozw_version() -> str:
    try:
        return metadata.version("ozw")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def worker_resource(*, worker_id: str, backend: str, version: str) -> Resource:
    """The Go worker's resource (its ``newResource``): ``OTEL_RESOURCE_ATTRIBUTES``,
    the SDK's ``telemetry.sdk.*``, then ``service.name``, ``service.version``,
    ``worker.id`` and ``worker.backend``, which win over the environment's."""
    attributes = {"service.name": SERVICE_NAME, "service.version": version}
    if worker_id:
        attributes["worker.id"] = worker_id
    if backend:
        attributes["worker.backend"] = backend
    # Not Resource.create: its detectors add a random service.instance.id Go has not.
    sdk = Resource(
        {
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": sdk_version,
        }
    )
    return OTELResourceDetector().detect().merge(sdk).merge(Resource(attributes))


class WorkerMetrics:
    """Every metric the worker exports, as the Go worker's instruments."""

    def __init__(
        self,
        *,
        worker_id: str,
        backend: str,
        max_concurrent: int,
        readers: Sequence[MetricReader] = (),
        resource: Resource | None = None,
    ) -> None:
        version = ozw_version()
        self.registry = CollectorRegistry(auto_describe=True)
        self.provider = MeterProvider(
            metric_readers=[PrometheusMetricReader(registry=self.registry), *readers],
            resource=resource
            or worker_resource(worker_id=worker_id, backend=backend, version=version),
            shutdown_on_exit=False,  # the worker flushes with a deadline (export.py)
        )
        meter = self.provider.get_meter(SCOPE_NAME)
        gauge, counter = meter.create_gauge, meter.create_counter
        self.connected = gauge(*go_instrument("oz_worker_connected"))
        self.tasks_active = meter.create_up_down_counter(*go_instrument("oz_worker_tasks_active"))
        self.max_concurrent = gauge(*go_instrument("oz_worker_tasks_max_concurrent"))
        self.claimed = counter(*go_instrument("oz_worker_tasks_claimed_total"))
        self.rejected = counter(*go_instrument("oz_worker_tasks_rejected_total"))
        self.completed = counter(*go_instrument("oz_worker_tasks_completed_total"))
        self.duration = meter.create_histogram(*go_instrument("oz_worker_task_duration_seconds"))
        self.failures = counter(*go_instrument("oz_worker_task_failures_total"))
        self.reconnects = counter(*go_instrument("oz_worker_websocket_reconnects_total"))
        self.info = gauge(*go_instrument("oz_worker_info"))
        # Primed as Go primes them: dashboards see every known series from the start.
        self.connected.set(0)
        self.tasks_active.add(0)
        self.claimed.add(0)
        self.rejected.add(0, {"reason": PRIMED_REJECT})
        for label in RESULT_LABELS.values():
            self.completed.add(0, {"result": label})
        for phase in FAILURE_PHASES:
            for reason in FailureReason:
                self.failures.add(0, {"phase": phase, "reason": reason.value})
        for kind in RECONNECT_REASONS:
            self.reconnects.add(0, {"reason": kind})
        self.max_concurrent.set(max_concurrent)
        self.info.set(1, {"version": version, "backend": backend, "worker_id": worker_id})

    # Hooks the worker calls -------------------------------------------------------

    def on_claimed(self, _params: TaskParams) -> None:
        self.claimed.add(1)
        self.tasks_active.add(1)

    def on_rejected(self, _task_id: str, reason: str) -> None:
        self.rejected.add(1, {"reason": REJECT_LABELS.get(reason, reason)})

    def on_finished(self, _params: TaskParams, outcome: TaskOutcome, duration: float) -> None:
        self.tasks_active.add(-1)
        if outcome.result is TaskResult.DETACHED:
            return  # not ended: the worker's next start reattaches and reports it
        result = {"result": RESULT_LABELS[outcome.result]}
        self.completed.add(1, result)
        self.duration.record(duration, result)
        if outcome.reason is not None:
            phase = outcome.failure_phase
            self.failures.add(1, {"phase": phase, "reason": outcome.reason.value})
        if outcome.teardown_failed:
            phase, reason = CLEANUP_FAILURE
            self.failures.add(1, {"phase": phase, "reason": reason})

    def on_connection(self, connected: bool, _why: str) -> None:
        self.connected.set(1 if connected else 0)

    def on_lost(self, why: str) -> None:
        """A failed dial or an ended session (see :attr:`Connection.on_lost`)."""
        self.reconnects.add(1, {"reason": why})

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
