"""``bench/RESULTS.md``: the rows of one ``python -m bench`` run, with its machine and date."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from bench.stats import Row, human, human_time, median, p90

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> dict[str, str]:
    """What the figures depend on, for the header."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=RESULTS.parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s) ({cpu}), "
        f"Linux {platform.release()}",
        "python": platform.python_version(),
        "commit": commit,
    }


def markdown(rows: Sequence[Row], header: dict[str, str]) -> str:
    lines = [
        "# ozw benchmark results",
        "",
        "Written by `python -m bench` (`just bench`); regenerate, do not edit. Every ratio",
        "is worker median / baseline median from the same run; see `bench/*.py` for what",
        "each side measures.",
        "",
    ]
    lines += [f"- **{key}**: {value}" for key, value in header.items()]
    lines += [
        "",
        "| benchmark | worker median | worker p90 | baseline median | baseline p90 | ratio | n |"
        " goal |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if row.skipped is not None:
            lines.append(f"| {row.name} | not measured: {row.skipped} | | | | | | {row.goal} |")
            continue
        cells = [
            human(median(row.worker), row.unit),
            human(p90(row.worker), row.unit),
            human(median(row.baseline), row.unit),
            human(p90(row.baseline), row.unit),
            f"{row.ratio:.2f}x",
            str(row.n),
        ]
        lines.append(f"| {row.name} | {' | '.join(cells)} | {row.goal} |")
    lines += ["", "## Notes", ""]
    for row in rows:
        if row.skipped is not None or not (row.note or row.phases):
            continue
        lines.append(f"- **{row.name}**: {row.note}")
        for name, value in row.phases.items():
            lines.append(f"  - {name}: {human_time(value)}")
    return "\n".join(lines) + "\n"
