"""Record what the Go worker exports in the scenario (tests/telemetry/scenario.py), as
fixtures the tests compare ozw with: what the real collector received over OTLP/HTTP
(metrics' shape, spans) and its Prometheus scrape.

    .venv/bin/python -m tests.telemetry.record_go /path/to/oz-agent-worker COMMIT

Data, not code: the Go worker's source is never needed, only its binary.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import trio

from tests.support.ozw_process import STANDIN_AGENT
from tests.support.ports import free_port
from tests.telemetry.collector import Collector, attributes, collector_binary, spans_of
from tests.telemetry.scenario import TASKS, WORKER_ID, dispatch_server, outcomes, worker_env
from tests.telemetry.test_otlp import FIXTURES, shape


def go_args(binary: Path, workdir: Path, url: str) -> list[str]:
    config = workdir / "worker.yaml"
    backend = {"workspace_root": str(workdir / "ws"), "oz_path": str(STANDIN_AGENT)}
    config.write_text(json.dumps({"worker_id": WORKER_ID, "backend": {"direct": backend}}))
    return [
        str(binary),
        "--config-file",
        str(config),
        "--web-socket-url",
        url,
        "--backend",
        "direct",
    ]


async def run_go(
    binary: Path, workdir: Path, otel: dict[str, str], scrape_port: int | None = None
) -> str:
    """The scenario through the Go worker; its Prometheus scrape when asked, then SIGTERM."""
    scraped = ""
    async with trio.open_nursery() as nursery, dispatch_server(nursery, workdir) as (url, record):
        go = await trio.lowlevel.open_process(
            go_args(binary, workdir, url), env=worker_env(otel), stderr=subprocess.DEVNULL
        )
        # A recording script: the dev server's record is the one signal there is.
        while outcomes(record).keys() != set(TASKS):  # noqa: ASYNC110
            await trio.sleep(0.1)
        if scrape_port is not None:
            address = f"http://127.0.0.1:{scrape_port}/metrics"
            scraped = await trio.to_thread.run_sync(
                lambda: urllib.request.urlopen(address).read().decode()
            )
        go.send_signal(signal.SIGTERM)
        await go.wait()
        nursery.cancel_scope.cancel()
    return scraped


def span_summary(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": span["name"],
            "attributes": sorted(attributes(span)),
            "events": [(e["name"], sorted(attributes(e))) for e in span.get("events", [])],
            "status": span.get("status", {}),
        }
        for _, _, span in spans_of(batches)
    ]


async def record(binary: Path, commit: str) -> None:
    FIXTURES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        collector = Collector(collector_binary(), workdir)
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run)
            otel = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
                "OTEL_METRIC_EXPORT_INTERVAL": "300",
                "OTEL_TRACES_EXPORTER": "otlp",
            }
            await run_go(binary, workdir, otel)
            nursery.cancel_scope.cancel()
        batches = collector.received()
        note = f"the Go worker (oz-agent-worker {commit}) via tests/telemetry/record_go.py"
        metrics = {"recorded from": note, **shape(batches)}
        (FIXTURES / "go-otlp-metrics-shape.json").write_text(json.dumps(metrics, indent=1) + "\n")
        spans = {"recorded from": note, "spans": span_summary(batches)}
        (FIXTURES / "go-otlp-spans.json").write_text(json.dumps(spans, indent=1) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        otel = {
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        }
        scraped = await run_go(binary, Path(tmp), otel, scrape_port=port)
        head = f"# recorded from {note}\n"
        (FIXTURES / "go-prometheus.txt").write_text(head + scraped)


if __name__ == "__main__":
    trio.run(record, Path(sys.argv[1]), sys.argv[2])
