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


def layout_tree(readme: str) -> list[str]:
    """The module paths of the "How it is built" tree (two spaces of indent a level)."""
    section = readme.split("## How it is built\n", 1)[1]
    block = re.search(r"```text\nsrc/ozw/\n(.*?)\n```", section, re.S)
    assert block, 'no "src/ozw/" tree in "How it is built"'
    paths: list[str] = []
    folders: list[str] = []
    for line in block.group(1).splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2 - 1
        entry = line.split()[0]
        del folders[depth:]
        if entry.endswith("/"):
            folders.append(entry)
            paths.append("".join(folders) + "__init__.py")
        else:
            paths.append("".join(folders) + entry)
    return paths


def test_readme_tree_lists_every_module_once() -> None:
    listed = layout_tree((REPO / "README.md").read_text())
    package = REPO / "src" / "ozw"
    modules = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if path.relative_to(package).as_posix() != "__init__.py"
    }
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert set(listed) == modules
