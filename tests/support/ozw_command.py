"""Run the installed ``ozw`` command as a real process and check its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

OZW = Path(sys.executable).with_name("ozw")
"""The console script pip installed beside this interpreter: what an operator runs."""

HOST_ENV = {k: v for k, v in os.environ.items() if k not in ("WARP_API_KEY", "OZW_DEV_API_KEY")}


def run_ozw(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    module: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``ozw ARGS`` in ``cwd``, without the host's API keys (``env`` adds variables);
    ``python -m ozw ARGS`` with ``module``."""
    command = [sys.executable, "-m", "ozw"] if module else [str(OZW)]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**HOST_ENV, **(env or {})},
        timeout=timeout,
        check=False,
    )


def one_error_line(stderr: str) -> str:
    """The single ``ozw: error: ...`` line ``stderr`` must consist of."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("ozw: error: "), stderr
    return lines[0]


def smoke_task(directory: Path, task_id: str, prompt: str) -> Path:
    """A task file for ``ozw smoke --task``: ``task_id``, whose stand-in agent runs
    ``prompt`` (``OZ_STANDIN_PROMPT``)."""
    path = directory / "task.json"
    task = {"task_id": task_id, "task": {"id": task_id}, "env_vars": {"OZ_STANDIN_PROMPT": prompt}}
    path.write_text(json.dumps(task))
    return path
