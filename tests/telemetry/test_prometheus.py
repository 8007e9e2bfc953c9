"""``OTEL_METRICS_EXPORTER=prometheus``: ozw (the real command) serves, after the
scenario's run, the series the Go worker served after the same run
(fixtures/go-prometheus.txt, recorded by record_go.py)."""

from __future__ import annotations

import signal
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ozw_process import OzwProcess
from tests.support.ports import free_port
from tests.telemetry.scenario import dispatch_server, ozw_args, worker_env
from tests.telemetry.test_otlp import FIXTURES
from tests.test_metrics import http_get

GO_ONLY = {"promhttp_metric_handler_errors_total"}
"""The Go Prometheus client's own series, not the worker's."""
BUILD_LABELS = {
    "target_info": ("service_version", "telemetry_sdk_language", "telemetry_sdk_version"),
    "oz_worker_info": ("version",),
}
"""Labels whose values name the build, which differ by nature."""

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def series(text: str) -> Series:
    """Every sample, its build labels' values blanked, bucket bounds as numbers; a
    histogram's ``_sum`` (how long the tasks took) is left out."""
    found: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in GO_ONLY or sample.name.endswith("_sum"):
                continue
            blank = BUILD_LABELS.get(sample.name, ())
            labels = {k: "*" if k in blank else v for k, v in sample.labels.items()}
            if "le" in labels:  # Python's client writes 5.0 where Go's writes 5
                labels["le"] = str(float(labels["le"]))
            found[sample.name, tuple(sorted(labels.items()))] = sample.value
    return found


async def test_the_prometheus_exporter_serves_the_go_workers_series(tmp_path: Path) -> None:
    port = free_port()
    env = worker_env(
        {
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        }
    )
    async with trio.open_nursery() as nursery, dispatch_server(nursery, tmp_path) as (url, _):
        worker = await nursery.start(OzwProcess(ozw_args(tmp_path, url), env).run)
        with trio.fail_after(60):
            await worker.wait_line(r"task=ok-1 completed \(")
            await worker.wait_line(r"task=bad-1 failed \(")
            status, body = await http_get(port, "/metrics")
            worker.send_signal(signal.SIGTERM)
            assert await worker.wait() == 0, worker.log
        nursery.cancel_scope.cancel()
    assert status == 200
    go = series((FIXTURES / "go-prometheus.txt").read_text())
    assert series(body) == go
