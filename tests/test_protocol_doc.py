"""docs/protocol.md's tables against the code, both ways (doc ⊆ code and code ⊆ doc):
the message types, the failure reasons, the metric names and each metric's labels."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics_core import Metric

from ozw.tasks.failures import FailureReason
from ozw.telemetry.metrics import WorkerMetrics
from ozw.wire.messages import SERVER_MESSAGE_TYPES, WORKER_MESSAGE_TYPES

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/protocol.md has no section {title!r}"
    return match.group(1)


def table_rows(title: str) -> list[list[str]]:
    """The cells of each body row of the section's first table."""
    rows: list[list[str]] = []
    for line in section(title).splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if set("".join(cells)) <= {"-", ":"}:
            continue  # the separator row
        rows.append(cells)
    assert len(rows) > 1, f"no table in section {title!r}"
    return rows[1:]  # without the header row


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def exposed_metrics() -> dict[str, set[str]]:
    """Every metric the worker serves, by exposed name, with its label names."""
    metrics = WorkerMetrics(worker_id="doc-check", backend="direct", max_concurrent=1)
    metrics.duration.record(1.0, {"result": "succeeded"})  # it appears with a first task
    found: dict[str, set[str]] = {}
    family: Metric
    for family in metrics.registry.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        if family.name + suffix == "target_info":  # the resource, not a metric of ours
            continue
        labels = {name for sample in family.samples for name in sample.labels}
        found[family.name + suffix] = labels - {"le", *SCOPE_LABELS}
    return found


SCOPE_LABELS = ("otel_scope_name", "otel_scope_version", "otel_scope_schema_url")
"""On every series alike (docs/operations.md), as the Go worker's."""


def test_message_types_match() -> None:
    documented = [names(row[0])[0] for row in table_rows("Messages")]
    assert sorted(documented) == sorted(SERVER_MESSAGE_TYPES | WORKER_MESSAGE_TYPES)


def test_message_directions_match() -> None:
    for row in table_rows("Messages"):
        kind, direction = names(row[0])[0], row[1]
        expected = SERVER_MESSAGE_TYPES if direction.startswith("server") else WORKER_MESSAGE_TYPES
        assert kind in expected, f"{kind} is documented as {direction}"


def test_failure_reasons_match() -> None:
    documented = [names(row[0])[0] for row in table_rows("Failure reasons")]
    assert sorted(documented) == sorted(reason.value for reason in FailureReason)


def test_metric_names_and_labels_match() -> None:
    documented = {
        names(row[0])[0]: set(names(row[1])) for row in table_rows("Metrics") if names(row[0])
    }
    assert documented == exposed_metrics()
