"""Wrong input to each ``ozw`` command, through the real command: exactly one
``ozw: error: ...`` line naming what is wrong, a non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ozw_command import one_error_line, run_ozw

GOOD_CONFIG = """
worker_id = "bad-input"
[server]
websocket_url = "ws://127.0.0.1:1/ws"
[backend.direct]
workspace_root = "{tmp}/ws"
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory of wrong inputs (and one good config, ``good.toml``)."""
    (tmp_path / "good.toml").write_text(GOOD_CONFIG.format(tmp=tmp_path))
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    (tmp_path / "scalar.yaml").write_text("backend: 5\n")
    (tmp_path / "typo.toml").write_text('worker_id = "w"\nmax_concurent_tasks = 2\n')
    return tmp_path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--config", "a-dir"], "a-dir: is a directory, not a config file"),
        (["check", "--config", "binary.toml"], "binary.toml: invalid TOML: not UTF-8"),
        (["config", "show", "--config", "loop1"], "loop1: cannot read: Too many levels of sym"),
        (["run", "--config", "good.toml", "--api-key", ""], "--api-key: must not be empty"),
        (["check", "--config", "good.toml", "--api-key", " "], "--api-key: must not be empty"),
        (["smoke", "--config", "good.toml", "--task", "a-dir"], "a-dir: Is a directory"),
        (
            ["check", "--config", "typo.toml"],
            "typo.toml: max_concurent_tasks: unknown key (did you mean `max_concurrent_tasks`?)",
        ),
        (["config", "import", "a-dir"], "a-dir: cannot read: Is a directory"),
        (["config", "import", "scalar.yaml"], "scalar.yaml: backend: expected a mapping, got '5'"),
        (["config", "init", "--output", "a-dir", "--force"], "cannot write a-dir: Is a directory"),
        (["demo", "--metrics-addr", "nonsense"], "--metrics-addr: 'nonsense' is not HOST:PORT"),
        (["dev-server", "--api-key", ""], "--api-key: must not be empty"),
        (["dev-server", "--assignments", "absent.jsonl"], "absent.jsonl: No such file or dir"),
        (["dev-server", "--port", "0", "--record", "a-dir"], "a-dir: Is a directory"),
        (["smoke", "--config", "good.toml", "--timeout", "-1s"], "--timeout: '-1s' is not a dur"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_wrong_input_is_one_error_line(files: Path, args: list[str], expected: str) -> None:
    result = run_ozw(*args, cwd=files, env={"WARP_API_KEY": "k"})
    assert result.returncode != 0, result.stdout + result.stderr
    line = one_error_line(result.stderr)
    assert line.startswith(f"ozw: error: {expected}"), line


def test_every_problem_of_a_config_is_listed_in_one_line(tmp_path: Path) -> None:
    unknown = "".join(f"key{i} = {i}\n" for i in range(12))
    config = 'worker_id = "w"\nmax_task = 1\ntask_timeout = "soon"\n' + unknown
    (tmp_path / "many.toml").write_text(config + '[server]\nwebsoket_url = "ws://x"\n')
    result = run_ozw("run", "--config", "many.toml", cwd=tmp_path, env={"WARP_API_KEY": "k"})
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert line.startswith("ozw: error: many.toml: "), line
    problems = line.removeprefix("ozw: error: many.toml: ").split("; ")
    assert any(p.startswith("task_timeout: ") for p in problems), problems
    assert len(problems) == 11, problems  # ten in file order, then the count of the rest
    assert problems[0] == "max_task: unknown key (did you mean `max_tasks`?)"
    assert problems[-1] == "and 5 more"
