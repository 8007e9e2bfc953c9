"""Run the Go worker's binary on each case of tests/data/go_cli_cases.yaml and record
whether it accepts the command line and file (it goes on to connect) or refuses them
(its fatal line), in tests/data/go_cli_observed.yaml: the Go side of test_go_values.

Usage: python -m tests.scripts.observe_go /path/to/oz-agent-worker
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).resolve().parent.parent / "data"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def observe(binary: str, case: dict[str, Any]) -> dict[str, str]:
    """The binary's verdict on one case: ``accepts`` (with the URL it dials) or its error."""
    with tempfile.TemporaryDirectory() as scratch:
        args = [arg.replace("{file}", f"{scratch}/config.yaml") for arg in case["args"]]
        Path(scratch, "config.yaml").write_text(case.get("yaml", ""))
        env = {"PATH": "/usr/bin:/bin", **case.get("env", {})}
        if "--api-key" not in args:
            env["WARP_API_KEY"] = "k"
        process = subprocess.Popen(
            [binary, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert process.stdout is not None
        verdict = {"go": "refuses", "line": "(no output)"}
        for raw in process.stdout:
            line = _ANSI.sub("", raw).strip()
            if "Connecting to" in line:
                verdict = {"go": "accepts", "line": line.split("Connecting to ", 1)[1]}
                break
            if " FTL " in line or "error:" in line:
                verdict = {"go": "refuses", "line": line.split(" ", 2)[-1]}
                break
        process.kill()
        process.wait()
    return verdict


def main() -> None:
    cases = yaml.safe_load((DATA / "go_cli_cases.yaml").read_text())
    observed = {case["name"]: observe(sys.argv[1], case) for case in cases}
    header = "# Observed by tests/scripts/observe_go.py with the Go worker at commit 3382ab6.\n"
    (DATA / "go_cli_observed.yaml").write_text(header + yaml.safe_dump(observed, sort_keys=True))


if __name__ == "__main__":
    main()
