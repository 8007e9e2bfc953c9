"""The OTEL_* variables, read as the Go worker (``autoexport``) reads them.

A pure reading of the environment into :class:`OtelPlan`: which metrics exporter,
which trace exporter, over which OTLP protocol, and where the Prometheus exporter
listens. The OTLP exporters read their own endpoint, headers and timeout variables
(``OTEL_EXPORTER_OTLP_*`` and the per-signal ``OTEL_EXPORTER_OTLP_METRICS_*`` /
``_TRACES_*``), and the periodic reader ``OTEL_METRIC_EXPORT_INTERVAL``, exactly as
the OpenTelemetry specification says; nothing here repeats them.

One deliberate difference (docs/migrating-from-go.md): the Go worker pushes OTLP to
``localhost:4318`` when nothing is set; ozw pushes only when asked
(``OTEL_METRICS_EXPORTER=otlp``) or when an OTLP endpoint is set, and says so at
start-up (:attr:`OtelPlan.notice`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, TypeVar

import attrs

Exporter = Literal["otlp", "prometheus", "console", "none"]
OtlpProtocol = Literal["http/protobuf", "grpc"]

METRICS_EXPORTERS: Final[tuple[Exporter, ...]] = ("otlp", "prometheus", "console", "none")
TRACES_EXPORTERS: Final[tuple[Exporter, ...]] = ("otlp", "console", "none")
PROTOCOLS: Final[tuple[OtlpProtocol, ...]] = ("http/protobuf", "grpc")
DEFAULT_PROMETHEUS_HOST: Final = "localhost"
DEFAULT_PROMETHEUS_PORT: Final = 9464
T = TypeVar("T", bound=str)
OTLP_ENDPOINTS: Final = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")


class OtelSettingError(ValueError):
    """An OTEL_* variable has a value the worker cannot use (the message names it)."""


@attrs.frozen
class OtelPlan:
    """What the worker exports, decided once at start-up."""

    metrics: Exporter = "none"
    metrics_protocol: OtlpProtocol = "http/protobuf"
    traces: Exporter = "none"
    traces_protocol: OtlpProtocol = "http/protobuf"
    prometheus_host: str = DEFAULT_PROMETHEUS_HOST
    prometheus_port: int = DEFAULT_PROMETHEUS_PORT
    notice: str | None = None
    """A line for the start-up log when the plan differs from what the Go worker does."""

    @property
    def prometheus_address(self) -> str:
        host = f"[{self.prometheus_host}]" if ":" in self.prometheus_host else self.prometheus_host
        return f"{host}:{self.prometheus_port}"


def read_plan(env: Mapping[str, str]) -> OtelPlan:
    """The export plan the OTEL_* variables in ``env`` describe.

    Raises:
        OtelSettingError: an exporter, protocol or port is not one the worker knows.
    """
    metrics_value = _get(env, "OTEL_METRICS_EXPORTER")
    notice = None
    if metrics_value is None:
        if any(_get(env, name) for name in OTLP_ENDPOINTS):
            metrics: Exporter = "otlp"
        else:
            metrics = "none"
            notice = (
                "OTLP metrics export is off: no OTEL_METRICS_EXPORTER or "
                "OTEL_EXPORTER_OTLP_ENDPOINT is set (the Go worker would push to "
                "localhost:4318; set OTEL_METRICS_EXPORTER=otlp to do the same)"
            )
    else:
        metrics = _choice(metrics_value, METRICS_EXPORTERS, "OTEL_METRICS_EXPORTER")
    # Like Go: traces only when OTEL_TRACES_EXPORTER names an exporter.
    traces_value = _get(env, "OTEL_TRACES_EXPORTER")
    traces: Exporter = (
        "none"
        if traces_value is None
        else _choice(traces_value, TRACES_EXPORTERS, "OTEL_TRACES_EXPORTER")
    )
    port_text = _get(env, "OTEL_EXPORTER_PROMETHEUS_PORT")
    return OtelPlan(
        metrics=metrics,
        metrics_protocol=_protocol(env, "METRICS"),
        traces=traces,
        traces_protocol=_protocol(env, "TRACES"),
        prometheus_host=_get(env, "OTEL_EXPORTER_PROMETHEUS_HOST") or DEFAULT_PROMETHEUS_HOST,
        prometheus_port=DEFAULT_PROMETHEUS_PORT if port_text is None else _port(port_text),
        notice=notice,
    )


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _choice(value: str, allowed: tuple[T, ...], name: str) -> T:
    for option in allowed:
        if value.lower() == option:
            return option
    raise OtelSettingError(f"{name}={value!r} is not one of {', '.join(allowed)}")


def _protocol(env: Mapping[str, str], signal: str) -> OtlpProtocol:
    name = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    value = _get(env, name)
    if value is None:
        name = "OTEL_EXPORTER_OTLP_PROTOCOL"
        value = _get(env, name)
    return "http/protobuf" if value is None else _choice(value, PROTOCOLS, name)


def _port(text: str) -> int:
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    raise OtelSettingError(f"OTEL_EXPORTER_PROMETHEUS_PORT={text!r} is not a port (1-65535)")


def otlp_endpoint(env: Mapping[str, str], signal: str, protocol: OtlpProtocol) -> str:
    """Where the SDK's OTLP exporter of ``signal`` ("METRICS", "TRACES") sends: the
    per-signal variable as it is, else the general one (plus ``/v1/<signal>`` over
    HTTP), else the SDK's default."""
    own = _get(env, f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    if own is not None:
        return own
    general = _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol == "grpc":
        return general or "http://localhost:4317"
    base = (general or "http://localhost:4318").rstrip("/")
    return f"{base}/v1/{signal.lower()}"


def describe_plan(plan: OtelPlan, env: Mapping[str, str]) -> str:
    """One line: where metrics and traces go (``ozw check``)."""

    def where(exporter: Exporter, signal: str, protocol: OtlpProtocol) -> str:
        if exporter == "otlp":
            return f"OTLP {protocol} to {otlp_endpoint(env, signal, protocol)}"
        if exporter == "prometheus":
            return f"Prometheus scrape on {plan.prometheus_address}"
        return "console" if exporter == "console" else "off"

    return (
        f"metrics: {where(plan.metrics, 'METRICS', plan.metrics_protocol)}; "
        f"traces: {where(plan.traces, 'TRACES', plan.traces_protocol)}"
    )
