"""``ozw demo`` as an operator sees it: in a real terminal (tmux), and through a pipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.ozw_command import HOST_ENV, OZW, run_ozw
from tests.support.terminal import run_in_terminal

TASKS = (
    "demo-fix-flaky-test",
    "demo-broken-build",
    "demo-long-refactor",
    "demo-over-capacity",
    "demo-write-docs",
)
NEXT_STEP = "Next: `ozw config init` writes config/worker.toml"
SGR = re.compile(r"\x1b\[[0-9;]*m")
"""A colour or style escape code."""


@pytest.mark.parametrize(("width", "no_color"), [(60, False), (120, True)])
def test_the_live_view_fits_the_terminal_and_ends_with_the_next_step(
    tmp_path: Path, width: int, no_color: bool
) -> None:
    env = {k: v for k, v in HOST_ENV.items() if k != "NO_COLOR"}
    if no_color:
        env["NO_COLOR"] = "1"
    screen = run_in_terminal([str(OZW), "demo"], width=width, height=40, env=env, cwd=tmp_path)
    assert screen.exit_code == 0, screen.text
    plain = [SGR.sub("", line) for line in screen.lines]
    # Redrawn in place: the table is on screen once, each task one row.
    assert sum(line.startswith("task ") for line in plain) == 1, screen.text
    rows = {line.split()[0]: line for line in plain if line.startswith("demo-")}
    assert sorted(rows) == sorted(TASKS)
    for task in TASKS:
        assert sum(line.startswith(task) for line in plain) == 1, screen.text
    assert rows["demo-long-refactor"].split()[1:4] == ["cancelled", "by", "the"]
    assert rows["demo-broken-build"].split()[1] == "failed"
    assert rows["demo-over-capacity"].split()[1] == "rejected"
    assert "  cancels demo-long-refactor" in plain
    assert any(line.startswith(NEXT_STEP) for line in plain)
    if no_color:
        assert "\x1b" not in screen.text
    else:
        assert "\x1b[32mcompleted" in screen.text
        assert "\x1b[33mcancelled" in screen.text


def test_demo_plain_output_shows_every_outcome_and_the_next_step(tmp_path: Path) -> None:
    result = run_ozw("demo", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[-1].startswith(NEXT_STEP)
    header = lines.index(next(line for line in lines if line.startswith("task ")))
    rows = {line.split()[0]: line for line in lines[header + 1 : header + 6]}
    assert rows["demo-fix-flaky-test"].split()[1] == "completed"
    assert rows["demo-broken-build"].split()[1:4] == ["failed", "agent_invocation", "3"]
    assert rows["demo-long-refactor"].split()[1:3] == ["cancelled", "by"]
    assert rows["demo-over-capacity"].split()[1] == "rejected"
    assert rows["demo-write-docs"].split()[1] == "completed"
    assert "server: cancels demo-long-refactor" in lines
    assert "Traceback" not in result.stderr


def test_demo_log_file_is_filled_when_stdout_is_a_pipe(tmp_path: Path) -> None:
    log_file = tmp_path / "demo.log"
    result = run_ozw("demo", "--log-file", str(log_file), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"worker log: {log_file}" in result.stdout.splitlines()
    log = log_file.read_text()
    assert "task=demo-fix-flaky-test claimed" in log
    assert "task=demo-broken-build" in log
    assert "claimed" not in result.stderr, "the log went where it was asked to go"
    assert result.stdout.splitlines()[-1].endswith("(README: Run against Oz).")
