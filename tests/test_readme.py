"""The README's two lines are what CI and users run; the README and docs/ point only
at what exists; docs/architecture.md's tree is the package as it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ozw.config import CliOverrides
from ozw.config.loading import load_config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
POINTING = ["src", "config", "examples", "bench", "deploy", "tests"]
"""Where code, comments and messages name a page (and a section of it)."""


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", text, re.S)


def test_ci_runs_exactly_the_readme_test_line() -> None:
    test_lines = [block for block in fenced(README.read_text(), "sh") if block.endswith("pytest")]
    assert len(test_lines) == 1
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_lines[0] in ci


def test_readme_has_a_one_line_demo() -> None:
    demo = [block for block in fenced(README.read_text(), "sh") if block.endswith("ozw demo")]
    assert demo == ["python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/ozw demo"]


def test_the_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_the_readme_configuration_loads(tmp_path: Path) -> None:
    (block,) = fenced(README.read_text(), "toml")
    path = tmp_path / "worker.toml"
    path.write_text(block + "\n")
    config = load_config(str(path), CliOverrides(), {"WARP_API_KEY": "k"})
    assert config.worker_id == "build-box-1"


def layout_tree(page: str) -> list[str]:
    """The module paths of the page's "The module tree" (two spaces of indent a level)."""
    section = page.split("## The module tree\n", 1)[1]
    block = re.search(r"```text\nsrc/ozw/\n(.*?)\n```", section, re.S)
    assert block, 'no "src/ozw/" tree in "The module tree"'
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


def test_the_architecture_tree_lists_every_module_once() -> None:
    listed = layout_tree((REPO / "docs" / "architecture.md").read_text())
    package = REPO / "src" / "ozw"
    modules = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if path.relative_to(package).as_posix() != "__init__.py"
    }
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert set(listed) == modules


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(match) for match in re.findall(r"^#+ (.+)$", text, re.M)}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_every_link_of_a_page_exists(page: Path) -> None:
    broken = []
    for link in links(page):
        if re.match(r"[a-z]+:", link):
            continue  # another site
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists() or (anchor and anchor not in anchors(path)):
            broken.append(link)
    assert broken == []


def named_part(page: Path, name: str) -> bool:
    """Whether ``page`` has a part called ``name``: a heading, or a bold or listed lead."""
    for line in page.read_text().splitlines():
        lead = re.sub(r"^(#+ |- )", "", line).lstrip("*")
        if line.startswith(("#", "- ", "**")) and lead.startswith(name):
            return True
    return False


def pointers() -> list[tuple[str, str, str]]:
    """``(where, page, part)`` of every ``README: Part``, ``README, "Part"``,
    ``docs/page.md, "Part"`` or ``docs/page.md ("Part")`` in the repository's code
    and examples (``part`` empty where only the page is named)."""
    pattern = re.compile(
        r"((?:[\w-]+/)*README(?:\.md)?|docs/[\w-]+\.md)"
        r'(?:, "([^"]+)"| \("([^"]+)"\)|: ([A-Z][\w ]+)\))?'
    )
    found = []
    for top in POINTING:
        for path in sorted((REPO / top).rglob("*")):
            if not path.is_file() or path.suffix not in {"", ".py", ".md", ".jsonl", ".service"}:
                continue
            where = path.relative_to(REPO).as_posix()
            if where == "tests/test_readme.py":
                continue  # this module's own examples
            for match in pattern.finditer(path.read_text(errors="replace")):
                page = "README.md" if match[1] == "README" else match[1]
                part = match[2] or match[3] or match[4] or ""
                found.append((where, page, " ".join(part.split())))
    return found


def test_every_page_and_part_the_code_points_to_exists() -> None:
    found = pointers()
    assert ("src/ozw/dev/demo.py", "README.md", "Run against Oz") in found
    broken = [
        (where, page, part)
        for where, page, part in found
        if not (REPO / page).is_file() or (part and not named_part(REPO / page, part))
    ]
    assert broken == []
