"""docs/migrating-from-go.md's table keeps up with the code: every flag of the Go
worker's main.go and of ``ozw run``, every config key of both, every environment
variable either reads, every metric, every value of both charts is a row."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from ozw.cli import main as cli
from ozw.cli.exit_status import TRACEBACK_ENV
from ozw.config.go_import import GO_BACKEND_KEYS, GO_TOP_KEYS
from ozw.config.model import (
    API_KEY_ENV,
    BACKEND_CLASSES,
    ServerConfig,
    WorkerConfig,
)
from ozw.telemetry.metrics import WorkerMetrics

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "migrating-from-go.md"
STATUSES = {"same", "different", "ozw only"}

GO_FLAGS = (
    "--config-file", "--backend", "--api-key", "--worker-id", "--web-socket-url",
    "--server-root-url", "--log-level", "--target-dir", "--no-cleanup", "-v", "--volumes",
    "-e", "--env", "--max-concurrent-tasks", "--idle-on-complete",
    "--session-sharing-server-url", "-h", "--help",
)  # fmt: skip
"""The Go worker's flags (main.go at 3382ab6; kong derives each name from a field)."""
GO_ENV = (
    "WARP_API_KEY", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
    "no_proxy", "ALL_PROXY", "all_proxy", "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_PROMETHEUS_HOST", "OTEL_EXPORTER_PROMETHEUS_PORT", "KUBECONFIG",
)  # fmt: skip
"""What the Go worker and its dialer read (the proxy variables as x/net/http/httpproxy
reads them; ALL_PROXY is listed because it is not read, a row says so)."""
OZW_ENV = (API_KEY_ENV, cli.DEV_API_KEY_ENV, TRACEBACK_ENV, "KUBECONFIG")
GO_METRICS = (
    "oz_worker_connected", "oz_worker_tasks_active", "oz_worker_tasks_max_concurrent",
    "oz_worker_tasks_claimed_total", "oz_worker_tasks_rejected_total",
    "oz_worker_tasks_completed_total", "oz_worker_task_duration_seconds",
    "oz_worker_task_failures_total", "oz_worker_websocket_reconnects_total", "oz_worker_info",
    "target_info",
)  # fmt: skip
"""The Go worker's instruments (internal/metrics, as Prometheus names them)."""


def table() -> dict[str, dict[str, str]]:
    """Each row's names by kind: name → status."""
    rows: dict[str, dict[str, str]] = {}
    text = DOC.read_text().split("## Everything, side by side", 1)[1]
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 4 or cells[0] in ("kind", "---"):
            continue
        kind, names, status = cells[0], cells[1], cells[2]
        assert status in STATUSES, line
        for name in re.findall(r"`([^`]+)`", names) or [names]:
            rows.setdefault(kind, {})[name] = status
    return rows


ROWS = table()


def test_every_go_flag_is_a_row_and_ozw_takes_it() -> None:
    (commands,) = [a for a in cli.build_parser()._actions if a.dest == "command"]
    parsers: dict[str, argparse.ArgumentParser] = commands.choices  # type: ignore[assignment]
    run = parsers["run"]
    ozw_flags = {option for action in run._actions for option in action.option_strings}
    for flag in GO_FLAGS:
        assert flag in ozw_flags, flag
        assert ROWS["flag"].get(flag) in ("same", "different"), flag
    for flag in ozw_flags:
        assert flag in ROWS["flag"], flag


def _keys(cls: type, prefix: str) -> list[str]:
    return [
        prefix + field.name
        for field in attrs.fields(cls)
        if field.name not in ("backend", "server", "api_key", "warnings")
    ]


def test_every_config_key_is_a_row() -> None:
    go_keys = [*GO_TOP_KEYS] + [
        f"backend.{name}.{key}" for name, keys in GO_BACKEND_KEYS.items() for key in keys
    ]
    for key in go_keys:
        assert ROWS["key"].get(key) in ("same", "different"), key
    ozw_keys = _keys(WorkerConfig, "") + _keys(ServerConfig, "server.")
    for name, cls in BACKEND_CLASSES.items():
        ozw_keys += _keys(cls, f"backend.{name}.")
    for key in ozw_keys:
        assert key in ROWS["key"], key


def test_every_environment_variable_is_a_row() -> None:
    for name in (*GO_ENV, *OZW_ENV):
        assert name in ROWS["env"], name


def test_every_metric_is_a_row() -> None:
    registry = WorkerMetrics(worker_id="w", backend="docker", max_concurrent=0).registry
    suffixes = {"counter": "_total", "info": "_info"}
    exported = {family.name + suffixes.get(family.type, "") for family in registry.collect()}
    # The duration histogram is served once a task has ended (as the Go worker's).
    assert exported | {"oz_worker_task_duration_seconds"} == set(GO_METRICS)
    for name in exported:
        assert ROWS["metric"].get(name) == "same", name


def _leaves(values: Any, path: tuple[str, ...] = ()) -> list[str]:
    if isinstance(values, dict) and values:
        return [leaf for key, value in values.items() for leaf in _leaves(value, (*path, key))]
    return [".".join(path)]


@pytest.mark.parametrize("values", ["tests/data/go_chart_values.yaml", "charts/ozw/values.yaml"])
def test_every_chart_value_is_a_row(values: str) -> None:
    for leaf in _leaves(yaml.safe_load((REPO / values).read_text())):
        covered = [name for name in ROWS["chart"] if leaf == name or leaf.startswith(name + ".")]
        assert covered, leaf
