"""The README's two lines are what CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", text, re.S)


def test_ci_runs_exactly_the_readme_test_line() -> None:
    readme = (REPO / "README.md").read_text()
    test_lines = [block for block in shell_blocks(readme) if block.endswith(".venv/bin/pytest")]
    assert len(test_lines) == 1
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_lines[0] in ci


def test_readme_has_a_one_line_demo() -> None:
    readme = (REPO / "README.md").read_text()
    demo = [block for block in shell_blocks(readme) if block.endswith("ozw demo")]
    assert demo == ["python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/ozw demo"]
