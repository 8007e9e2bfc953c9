"""ozw (the real command) exports to a real OpenTelemetry Collector over OTLP/HTTP and
OTLP/gRPC, with the Go worker's OTEL_* settings; the test reads what the collector
wrote: the Go worker's metrics (tests/telemetry/fixtures: what the same collector
received from the Go worker in the same run), task span trees, and no secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.ozw_process import OzwProcess
from tests.telemetry.collector import Collector, attributes, metrics_of, spans_of
from tests.telemetry.scenario import (
    CANARIES,
    TASKS,
    WORKER_ID,
    dispatch_server,
    outcomes,
    ozw_args,
    worker_env,
)

FIXTURES = Path(__file__).parent / "fixtures"
SCOPE = "github.com/warpdotdev/oz-agent-worker"
PHASES = {"claim", "setup", "execute", "teardown", "report"}
STATUS_OK, STATUS_ERROR = 1, 2


def shape(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """What a dashboard depends on, per metric: its type, unit, description, the
    attribute keys of its points; and the scope and the resource's keys."""
    found: dict[str, Any] = {}
    for resource, scope, metric in metrics_of(batches):
        kind = next(k for k in ("sum", "gauge", "histogram") if k in metric)
        data = metric[kind]
        found[metric["name"]] = {
            "type": kind,
            "monotonic": data.get("isMonotonic", False),
            "temporality": data.get("aggregationTemporality"),
            "unit": metric.get("unit", ""),
            "description": metric.get("description", ""),
            "keys": sorted({tuple(sorted(attributes(p))) for p in data["dataPoints"]}),
            "scope": (scope.get("name"), scope.get("version", "")),
            "resource": sorted(attributes(resource)),
        }
    normal: dict[str, Any] = json.loads(json.dumps(found))  # tuples as JSON has them
    return normal


def last_values(batches: list[dict[str, Any]]) -> dict[tuple[str, tuple[Any, ...]], Any]:
    """The latest value of every series (a histogram's count)."""
    values: dict[tuple[str, tuple[Any, ...]], Any] = {}
    for _, _, metric in metrics_of(batches):
        kind = next(k for k in ("sum", "gauge", "histogram") if k in metric)
        for point in metric[kind]["dataPoints"]:
            value = point.get("asInt", point.get("asDouble", point.get("count")))
            values[metric["name"], tuple(sorted(attributes(point).items()))] = int(value)
    return values


async def run_scenario(otelcol: Path, workdir: Path, otel: dict[str, str]) -> Collector:
    """The two tasks through ozw exporting to a fresh collector, which is then stopped
    (its file flushed); returns it for :meth:`Collector.received`."""
    collector = Collector(otelcol, workdir)
    env = worker_env(
        {
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
            "OTEL_TRACES_EXPORTER": "otlp",
            **{
                k: v.format(http=collector.http_endpoint, grpc=collector.grpc_endpoint)
                for k, v in otel.items()
            },
        }
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.run)
        async with dispatch_server(nursery, workdir) as (url, record):
            worker = OzwProcess(ozw_args(workdir, url, "--max-tasks", str(len(TASKS))), env)
            await nursery.start(worker.run)
            with trio.fail_after(60):
                assert await worker.wait() == 0, worker.log
            assert outcomes(record) == {"ok-1": "task_completed", "bad-1": "task_failed"}
            assert "Traceback" not in worker.log
            nursery.cancel_scope.cancel()
    return collector


@pytest.mark.parametrize(
    "otel",
    [
        pytest.param({"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}"}, id="http"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            id="grpc",
        ),
    ],
)
async def test_a_collector_receives_the_go_workers_metrics_and_task_traces(
    otelcol: Path, tmp_path: Path, otel: dict[str, str]
) -> None:
    collector = await run_scenario(otelcol, tmp_path, otel)
    batches = collector.received()
    raw = collector.output.read_text()
    for canary in CANARIES:
        assert canary not in raw

    # Metrics: the Go worker's, as the collector got them from it (the fixture).
    ours = shape(batches)
    go = json.loads((FIXTURES / "go-otlp-metrics-shape.json").read_text())
    del go["recorded from"]
    assert ours.keys() == go.keys()
    for name, expected in go.items():
        assert ours[name] == expected, name
    values = last_values(batches)
    assert values["oz_worker_tasks_completed_total", (("result", "succeeded"),)] == 1
    assert values["oz_worker_tasks_completed_total", (("result", "failed"),)] == 1
    failure = (("phase", "backend"), ("reason", "agent_invocation"))
    assert values["oz_worker_task_failures_total", failure] == 1
    assert values["oz_worker_tasks_claimed_total", ()] == 2
    assert values["oz_worker_task_duration_seconds", (("result", "failed"),)] == 1
    resource = attributes(next(metrics_of(batches))[0])
    assert resource["service.name"] == "oz-agent-worker"
    assert resource["worker.id"] == WORKER_ID
    assert resource["worker.backend"] == "direct"
    assert resource["deployment.environment"] == "test"
    assert resource["telemetry.sdk.language"] == "python"

    # Traces: one oz_worker.task per task, its phases as children.
    spans = [span for _, _, span in spans_of(batches)]
    scopes = {scope["name"] for _, scope, _ in spans_of(batches)}
    assert scopes == {SCOPE}
    roots = {attributes(s)["task.id"]: s for s in spans if s["name"] == "oz_worker.task"}
    assert roots.keys() == set(TASKS)
    for task_id, root in roots.items():
        assert not root.get("parentSpanId")
        children = [s for s in spans if s.get("parentSpanId") == root["spanId"]]
        assert {c["name"] for c in children} == PHASES, task_id
        assert {c["traceId"] for c in children} == {root["traceId"]}
        root_attributes = attributes(root)
        assert root_attributes["worker.backend"] == "direct"
        events = [e["name"] for e in root["events"]]
        assert events[:3] == ["task.assigned", "task.claimed", "task.started"]
        assert "backend.started" in events
    # Go's span of each outcome, its attributes and events, are all in ours, in order.
    go_spans = json.loads((FIXTURES / "go-otlp-spans.json").read_text())["spans"]
    for go_span in go_spans:
        root = next(r for r in roots.values() if r["status"]["code"] == go_span["status"]["code"])
        assert set(go_span["attributes"]) <= set(attributes(root))
        root_events = iter((e["name"], set(attributes(e))) for e in root["events"])
        for name, keys in go_span["events"]:
            assert any(name == n and set(keys) <= mine for n, mine in root_events), name
    ok, bad = roots["ok-1"], roots["bad-1"]
    assert attributes(ok)["task.title"] == "deploy with [redacted]"
    assert attributes(bad)["task.title"] == "a task that fails with [redacted]"
    assert ok["status"] == {"code": STATUS_OK}
    assert [e["name"] for e in ok["events"]][-1] == "task.completed"
    assert bad["status"] == {"code": STATUS_ERROR, "message": "agent_invocation"}
    failed = next(e for e in bad["events"] if e["name"] == "task.failed")
    assert attributes(failed) == {
        "failure.phase": "backend",
        "failure.reason": "agent_invocation",
        "error.message": "agent exited with exit code 1",
    }
    exception = next(e for e in bad["events"] if e["name"] == "exception")
    assert attributes(exception)["exception.message"] == "agent exited with exit code 1"
    execute = next(
        s for s in spans if s.get("parentSpanId") == bad["spanId"] and s["name"] == "execute"
    )
    assert execute["status"]["code"] == STATUS_ERROR
