"""The direct backend's pure rules: task ids, environment layers, durations, oz lookup."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ozw.backends.direct.backend import executable_problem, oz_candidate
from ozw.backends.direct.rules import (
    agent_environment,
    dotenv_mapping,
    forced_agent_variables,
    harness_home,
    host_environment,
    is_direct_child,
    private_dir_label,
    script_environment,
    script_variables,
    task_id_problem,
)
from ozw.backends.execution import configured_environment, invalid_variables
from ozw.config import EnvEntry


@pytest.mark.parametrize("task_id", ["", ".", "..", "a/b", "/abs", "a\\b", "nul\0byte", "../x"])
def test_unsafe_task_ids_are_refused(task_id: str) -> None:
    assert task_id_problem(task_id) is not None


@pytest.mark.parametrize("task_id", ["run-123", "a.b", "...", "..x", " spaced ", "ünïcode"])
def test_ordinary_task_ids_are_accepted(task_id: str) -> None:
    assert task_id_problem(task_id) is None


def test_is_direct_child() -> None:
    assert is_direct_child("/root/ws/run-1", "/root/ws")
    assert not is_direct_child("/root/ws/a/b", "/root/ws")
    assert not is_direct_child("/root/ws", "/root/ws")
    assert not is_direct_child("/root/other", "/root/ws")


def test_configured_environment_inherits_or_skips_entries_without_value() -> None:
    entries = [EnvEntry("FOO", "bar"), EnvEntry("INHERITED"), EnvEntry("ABSENT")]
    environ = {"INHERITED": "from-worker", "UNRELATED": "x"}
    assert configured_environment(entries, environ) == {"FOO": "bar", "INHERITED": "from-worker"}


def test_configured_environment_later_entry_wins() -> None:
    entries = [EnvEntry("FOO", "one"), EnvEntry("FOO", "two")]
    assert configured_environment(entries, {}) == {"FOO": "two"}


def test_host_environment_keeps_only_home_tmpdir_path() -> None:
    environ = {"HOME": "/h", "PATH": "/bin", "WARP_API_KEY": "secret", "USER": "me"}
    assert host_environment(environ) == {"HOME": "/h", "PATH": "/bin"}


def test_agent_environment_precedence() -> None:
    env = agent_environment(
        host={"HOME": "/h", "PATH": "/bin", "A": "host"},
        task={"A": "task", "B": "task", "C": "task", "D": "task"},
        configured={"B": "configured", "C": "configured"},
        env_file={"C": "file", "GIT_CONFIG_GLOBAL": "/evil"},
        forced={"GIT_CONFIG_GLOBAL": "/ws/.gitconfig"},
    )
    assert env == {
        "HOME": "/h",
        "PATH": "/bin",
        "A": "task",
        "B": "configured",
        "C": "file",
        "D": "task",
        "GIT_CONFIG_GLOBAL": "/ws/.gitconfig",
    }
    # The order of names follows their first appearance (host first).
    assert list(env)[:2] == ["HOME", "PATH"]


def test_script_environment_precedence() -> None:
    env = script_environment(
        worker={"WARP_API_KEY": "k", "X": "worker", "OZ_RUN_ID": "spoofed"},
        task={"X": "task", "Y": "task"},
        configured={"Y": "configured"},
        oz=script_variables(workspace="/ws", run_id="run-1", gitconfig="/ws/.gitconfig"),
    )
    assert env == {
        "X": "task",
        "Y": "configured",
        "OZ_RUN_ID": "run-1",
        "OZ_WORKSPACE_ROOT": "/ws",
        "OZ_WORKER_BACKEND": "direct",
        "GIT_CONFIG_GLOBAL": "/ws/.gitconfig",
    }


def test_script_environment_passes_the_worker_key_only_when_configured() -> None:
    worker = {"WARP_API_KEY": "k", "PATH": "/bin"}
    assert script_environment(worker=worker, task={}, configured={}, oz={}) == {"PATH": "/bin"}
    configured = configured_environment([EnvEntry("WARP_API_KEY")], worker)
    opted_in = script_environment(worker=worker, task={}, configured=configured, oz={})
    assert opted_in == {"PATH": "/bin", "WARP_API_KEY": "k"}


@pytest.mark.parametrize("length", [1, 64, 65, 255])
def test_private_dir_label_fits_any_task_id(length: int) -> None:
    task_id = "é" * (length // 2) + "x" * (length % 2)
    label = private_dir_label(task_id)
    assert task_id_problem(label) is None
    assert len(f"ozw-{label}-12345678".encode()) <= 255
    assert (label == task_id) == (len(task_id.encode()) <= 64)
    assert private_dir_label(task_id) == label  # stable


def test_script_variables_environment_file_only_for_setup() -> None:
    setup = script_variables(workspace="/ws", run_id="r", gitconfig="/g", env_file="/ws/.oz.env")
    teardown = script_variables(workspace="/ws", run_id="r", gitconfig="/g")
    assert setup["OZ_ENVIRONMENT_FILE"] == "/ws/.oz.env"
    assert "OZ_ENVIRONMENT_FILE" not in teardown


@pytest.mark.parametrize(
    ("harness", "expected"),
    [
        (None, None),
        ("", None),
        ("oz", None),
        ("claude", ("CLAUDE_CONFIG_DIR", ".claude")),
        (" Claude ", ("CLAUDE_CONFIG_DIR", ".claude")),
        ("codex", ("CODEX_HOME", ".codex")),
    ],
)
def test_harness_home(harness: str | None, expected: tuple[str, str] | None) -> None:
    assert harness_home(harness) == expected


def test_forced_agent_variables() -> None:
    assert forced_agent_variables(gitconfig="/g", harness=None, private_dir="/ws") == {
        "GIT_CONFIG_GLOBAL": "/g"
    }
    assert forced_agent_variables(gitconfig="/g", harness="codex", private_dir="/ws") == {
        "GIT_CONFIG_GLOBAL": "/g",
        "CODEX_HOME": "/ws/.codex",
    }


def test_invalid_variables() -> None:
    env = {"OK": "v", "": "x", "A=B": "x", "NUL": "a\0b", "N\0": "x"}
    assert invalid_variables(env) == ["", "A=B", "NUL", "N\0"]


def test_dotenv_mapping_drops_bare_names() -> None:
    assert dotenv_mapping({"A": "1", "BARE": None, "EMPTY": ""}) == {"A": "1", "EMPTY": ""}


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_oz_candidate_prefers_oz_path_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert oz_candidate("bin/oz", "/nowhere") == str(tmp_path / "bin" / "oz")


def test_oz_candidate_searches_path(tmp_path: Path) -> None:
    _executable(tmp_path / "oz")
    _executable(tmp_path / "oz-dev")
    search = os.pathsep.join(["/nowhere", str(tmp_path)])
    assert oz_candidate(None, search) == str(tmp_path / "oz")
    assert oz_candidate("oz-dev", search) == str(tmp_path / "oz-dev")
    assert oz_candidate(None, "/nowhere") is None


def test_executable_problem(tmp_path: Path) -> None:
    good = _executable(tmp_path / "oz")
    plain = tmp_path / "plain"
    plain.write_text("")
    plain.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert executable_problem(str(good)) is None
    assert "not executable" in (executable_problem(str(plain)) or "")
    assert "does not exist" in (executable_problem(str(tmp_path / "missing")) or "")
    assert "directory" in (executable_problem(str(tmp_path)) or "")
