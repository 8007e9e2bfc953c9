"""The OpenTelemetry exporters an :class:`~ozw.telemetry.otel_env.OtelPlan` asks for.

Never in the way of the worker: the SDK's exporters block, so they run in the SDK's
own threads (the periodic metric reader, the batch span processor), never on Trio's;
their queues are bounded (spans beyond the batch processor's queue are dropped);
a collector that is down or slow costs one warning line per
:data:`WARN_EVERY` seconds and nothing else; at shutdown the providers are flushed
from a worker thread within :data:`FLUSH_DEADLINE`, shielded, and abandoned after it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import trio
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from ozw.telemetry.otel_env import Exporter, OtelPlan, OtlpProtocol

FLUSH_DEADLINE: Final = 5.0
"""Seconds the exporters get at shutdown (the Go worker gives its metrics 5s too)."""
WARN_EVERY: Final = 60.0
"""At most one line about failing exports per this many seconds."""
SDK_LOGGER: Final = "opentelemetry"

log = logging.getLogger(__name__)


class Flushable(Protocol):
    def shutdown(self) -> object: ...


def metric_readers(plan: OtelPlan) -> list[MetricReader]:
    """The pushing readers ``plan`` asks for (the Prometheus one is the metrics')."""
    chosen = _chosen(plan.metrics, plan.metrics_protocol)
    if chosen is None:
        return []
    # The interval and timeout come from OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT.
    return [PeriodicExportingMetricReader(METRIC_EXPORTERS[chosen]())]


def tracer_provider(plan: OtelPlan, resource: Resource) -> TracerProvider | None:
    """A tracer provider exporting as ``plan`` says, or None when traces are off."""
    chosen = _chosen(plan.traces, plan.traces_protocol)
    if chosen is None:
        return None
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    # Bounded: at most max_queue_size spans wait (2048, OTEL_BSP_MAX_QUEUE_SIZE).
    provider.add_span_processor(BatchSpanProcessor(SPAN_EXPORTERS[chosen]()))
    return provider


METRIC_EXPORTERS: Final[dict[str, Callable[[], MetricExporter]]] = {
    "http/protobuf": HttpMetricExporter,
    "grpc": GrpcMetricExporter,
    "console": lambda: ConsoleMetricExporter(out=sys.stdout),
}
SPAN_EXPORTERS: Final[dict[str, Callable[[], SpanExporter]]] = {
    "http/protobuf": HttpSpanExporter,
    "grpc": GrpcSpanExporter,
    "console": lambda: ConsoleSpanExporter(out=sys.stdout),
}
"""The exporters by OTLP protocol (they read their OTEL_EXPORTER_OTLP_* themselves)."""


def _chosen(exporter: Exporter, protocol: OtlpProtocol) -> str | None:
    """The key of the exporter to build; None when this signal pushes nothing."""
    match exporter:
        case "otlp":
            return protocol
        case "console":
            return "console"
    return None


class _OneLinePerPeriod(logging.Handler):
    """Turns the SDK's export errors (each with a traceback) into one warning line per
    period on the worker's log, saying how many were left out."""

    def __init__(self, every: float) -> None:
        super().__init__(logging.WARNING)
        self.every = every
        self.last = -every
        self.left_out = 0

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.left_out += 1
            return
        self.last = now
        cause = _first_line(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            cause = f"{cause}: {type(exc).__name__}: {_first_line(str(exc))}"
        more = f" ({self.left_out} more since the last)" if self.left_out else ""
        self.left_out = 0
        log.warning(
            "telemetry export: %s%s; the worker goes on (next such line in %gs at most)",
            cause,
            more,
            self.every,
        )


def _first_line(text: str) -> str:
    return (text.splitlines() or ["?"])[0]


def quiet_sdk_logs(every: float = WARN_EVERY) -> None:
    """Route the SDK's own log records through :class:`_OneLinePerPeriod`, one for the
    process (the SDK's loggers are), starting a new period."""
    sdk = logging.getLogger(SDK_LOGGER)
    for handler in sdk.handlers:
        if isinstance(handler, _OneLinePerPeriod):
            sdk.removeHandler(handler)
    sdk.addHandler(_OneLinePerPeriod(every))
    sdk.setLevel(logging.WARNING)
    sdk.propagate = False


async def flush(providers: Sequence[Flushable], deadline: float = FLUSH_DEADLINE) -> bool:
    """Shut the providers down (a last export each) off the Trio thread, shielded,
    within ``deadline``; True when they finished in time."""

    def shutdown_all() -> None:
        for provider in providers:
            provider.shutdown()

    with trio.move_on_after(deadline, shield=True) as scope:
        await trio.to_thread.run_sync(shutdown_all, abandon_on_cancel=True)
    if scope.cancelled_caught:
        log.warning("telemetry export: not flushed within %gs; left behind", deadline)
        return False
    return True
