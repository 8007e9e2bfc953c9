"""``just bench --quick`` as CI's smoke test: every benchmark row is measured.

It checks that each row has samples on both sides, never how fast anything is
(performance is measured by ``python -m bench`` and recorded in bench/RESULTS.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench.__main__ import NAMES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_quick_bench_measures_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    results = tmp_path / "RESULTS.md"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "bench", "--quick", "--require-all"),
            *("--json", str(out), "--results", str(results)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = json.loads(out.read_text())["rows"]
    unmeasured = [row["name"] for row in rows if "skipped" in row or row["n"] == 0]
    assert not unmeasured, run.stderr
    # Every benchmark produced its rows (a name is the part before the colon).
    assert {row["name"].split(":")[0] for row in rows} == set(NAMES)
    # The Markdown file has a line per row.
    text = results.read_text()
    assert all(f"| {row['name']} |" in text for row in rows)
