"""The OTEL_* rules (pure), redaction, and a bad value as one line from the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from ozw.telemetry.otel_env import (
    OtelPlan,
    OtelSettingError,
    OtlpProtocol,
    describe_plan,
    otlp_endpoint,
    read_plan,
)
from ozw.telemetry.tracing import scrub
from tests.support.ozw_command import one_error_line, run_ozw
from tests.telemetry.scenario import ozw_config, worker_env


def test_nothing_set_pushes_nothing_and_says_so() -> None:
    plan = read_plan({})
    assert (plan.metrics, plan.traces) == ("none", "none")
    assert plan.notice is not None
    assert "OTEL_METRICS_EXPORTER=otlp" in plan.notice


@pytest.mark.parametrize(
    "name", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]
)
def test_an_otlp_endpoint_alone_pushes_metrics_as_go(name: str) -> None:
    assert read_plan({name: "http://collector:4318"}) == OtelPlan(metrics="otlp")


def test_the_exporters_protocols_and_prometheus_address() -> None:
    plan = read_plan(
        {
            "OTEL_METRICS_EXPORTER": " Prometheus ",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "::1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": "9999",
        }
    )
    assert (plan.metrics, plan.traces) == ("prometheus", "otlp")
    assert (plan.metrics_protocol, plan.traces_protocol) == ("http/protobuf", "grpc")
    assert plan.prometheus_address == "[::1]:9999"
    assert read_plan({"OTEL_METRICS_EXPORTER": "none"}).notice is None
    assert read_plan({"OTEL_TRACES_EXPORTER": "none"}).traces == "none"
    assert read_plan({}).prometheus_address == "localhost:9464"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"OTEL_METRICS_EXPORTER": "jaeger"}, "OTEL_METRICS_EXPORTER='jaeger' is not one of"),
        ({"OTEL_TRACES_EXPORTER": "prometheus"}, "OTEL_TRACES_EXPORTER='prometheus' is not"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"),
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "0"}, "OTEL_EXPORTER_PROMETHEUS_PORT='0' is not a port"),
    ],
)
def test_a_value_the_worker_cannot_use_is_named(env: dict[str, str], problem: str) -> None:
    with pytest.raises(OtelSettingError, match=problem.replace("(", r"\(")):
        read_plan(env)


def test_scrub_redacts_every_secret_and_leaves_short_values() -> None:
    secrets = ["hunter2-long", "hunter2", "fail"]
    assert scrub("a hunter2-long, hunter2 and fails", secrets) == (
        "a [redacted], [redacted] and fails"
    )


def test_a_bad_otel_value_stops_the_command_in_one_line(tmp_path: Path) -> None:
    env = worker_env({"OTEL_METRICS_EXPORTER": "prometeus"})
    result = run_ozw(
        "run",
        "--config",
        str(ozw_config(tmp_path)),
        "--websocket-url",
        "ws://127.0.0.1:9/",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 1
    assert one_error_line(result.stderr) == (
        "ozw: error: OTEL_METRICS_EXPORTER='prometeus' is not one of "
        "otlp, prometheus, console, none"
    )


@pytest.mark.parametrize(
    ("env", "signal", "protocol", "endpoint"),
    [
        ({}, "METRICS", "http/protobuf", "http://localhost:4318/v1/metrics"),
        ({}, "TRACES", "grpc", "http://localhost:4317"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:1/"},
            "TRACES",
            "http/protobuf",
            "http://c:1/v1/traces",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:1"}, "METRICS", "grpc", "http://c:1"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:1",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:2/x",
            },
            "METRICS",
            "http/protobuf",
            "http://m:2/x",  # a per-signal endpoint is used as it is
        ),
    ],
)
def test_the_otlp_endpoint_as_the_sdk_reads_it(
    env: dict[str, str], signal: str, protocol: OtlpProtocol, endpoint: str
) -> None:
    assert otlp_endpoint(env, signal, protocol) == endpoint


def test_the_plan_in_one_line() -> None:
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_PORT": "9999",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
    }
    assert describe_plan(read_plan(env), env) == (
        "metrics: Prometheus scrape on localhost:9999; traces: OTLP grpc to http://localhost:4317"
    )
    assert describe_plan(read_plan({}), {}) == "metrics: off; traces: off"
    env = {"OTEL_METRICS_EXPORTER": "console", "OTEL_TRACES_EXPORTER": "none"}
    assert describe_plan(read_plan(env), env) == "metrics: console; traces: off"
