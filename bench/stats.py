"""Benchmark rows: samples of the worker and of its baseline, summarised as ratios."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else math.nan


def p90(samples: Sequence[float]) -> float:
    """Nearest-rank 90th percentile (the sample below which 90% of them lie)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def p99(samples: Sequence[float]) -> float:
    """Nearest-rank 99th percentile."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass
class Row:
    """One comparison: ``worker`` and ``baseline`` are per-operation times in seconds.

    ``ratio`` is worker median / baseline median: 1.0 means "costs what the baseline
    costs", 2.0 "twice the time". ``phases`` holds medians (seconds) of where the
    worker's time went, for the notes under the table.
    """

    name: str
    worker: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    note: str = ""
    skipped: str | None = None
    phases: dict[str, float] = field(default_factory=dict)
    throughput: bool = False
    """Print operations per second beside the times (protocol and scale rows)."""
    unit: str = "s"
    """What the samples are: seconds, "bytes" (memory rows) or "count" (fds)."""
    goal: str = ""
    """The goal this row measures, in words (bench/RESULTS.md shows it)."""

    @property
    def n(self) -> int:
        return min(len(self.worker), len(self.baseline))

    @property
    def ratio(self) -> float:
        base = median(self.baseline)
        return median(self.worker) / base if base else math.nan

    def as_json(self) -> dict[str, Any]:
        """The row as JSON (times in seconds; null where there is no value)."""
        if self.skipped is not None:
            return {"name": self.name, "skipped": self.skipped}
        return {
            "name": self.name,
            "n": self.n,
            "unit": self.unit,
            "worker_median_s": _finite(median(self.worker)),
            "worker_p90_s": _finite(p90(self.worker)),
            "baseline_median_s": _finite(median(self.baseline)),
            "baseline_p90_s": _finite(p90(self.baseline)),
            "ratio": _finite(self.ratio),
            "note": self.note,
            "phases_median_s": self.phases,
            "worker_samples_s": self.worker,
            "baseline_samples_s": self.baseline,
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def phase_medians(marks: Iterable[Mapping[str, float]], order: Sequence[str]) -> dict[str, float]:
    """Median time between consecutive marks, ``"a → b"``, over tasks that have both."""
    marks = list(marks)
    result: dict[str, float] = {}
    for first, second in itertools.pairwise(order):
        gaps = [m[second] - m[first] for m in marks if first in m and second in m]
        if gaps:
            result[f"{first} → {second}"] = median(gaps)
    return result


def human(value: float, unit: str) -> str:
    """A sample for people, in its unit."""
    if unit == "bytes":
        if math.isnan(value):
            return "-"
        return f"{value / 2**20:.1f}MB" if abs(value) >= 2**20 else f"{value / 2**10:.0f}KB"
    if unit == "count":
        return "-" if math.isnan(value) else f"{value:.2f}"
    return human_time(value)


def human_time(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds * 1e6:.1f}µs"


def table(rows: Sequence[Row]) -> list[str]:
    """The compact table, then per-row notes and phase breakdowns."""
    header = ("benchmark", "worker med", "worker p90", "base med", "base p90", "ratio", "n")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        if row.skipped is not None:
            lines.append((row.name, f"SKIPPED: {row.skipped}"))
            continue
        lines.append(
            (
                row.name,
                human(median(row.worker), row.unit),
                human(p90(row.worker), row.unit),
                human(median(row.baseline), row.unit),
                human(p90(row.baseline), row.unit),
                f"{row.ratio:.2f}x",
                str(row.n),
            )
        )
    widths = [max(len(line[i]) for line in lines if len(line) == len(header)) for i in range(7)]
    out: list[str] = []
    for line in lines:
        if len(line) != len(header):
            out.append(f"{line[0]:<{widths[0]}}  {line[1]}")
            continue
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells))
    out.insert(1, "-" * len(out[0]))
    notes = [row for row in rows if row.skipped is None and (row.note or row.phases)]
    for row in notes:
        out.append("")
        extra = ""
        if row.throughput:
            worker, base = median(row.worker), median(row.baseline)
            extra = f" [{1 / worker:,.0f}/s vs {1 / base:,.0f}/s]"
        out.append(f"{row.name}: {row.note}{extra}")
        for name, value in row.phases.items():
            out.append(f"    {name:<44} {human_time(value):>9}")
    return out
