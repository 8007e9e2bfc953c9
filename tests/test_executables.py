"""Checking a command before it starts behind the parent-death wrapper: the error
``execve`` would give, found the way ``execvpe`` looks."""

from __future__ import annotations

import errno
from pathlib import Path

from ozw.backends.execution.executables import check_executable, shebang_interpreter


def executable(path: Path, text: str = "#!/bin/sh\nexit 0\n", mode: int = 0o755) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def raised(name: str, env: dict[str, str], cwd: Path | None = None) -> OSError:
    try:
        check_executable(name, env=env, cwd=cwd)
    except OSError as exc:
        return exc
    raise AssertionError(f"{name} would start")


def test_found_on_the_childs_path_not_the_workers(tmp_path: Path) -> None:
    executable(tmp_path / "tool")
    check_executable("tool", env={"PATH": f"/nonexistent:{tmp_path}"})
    assert raised("tool", {"PATH": "/nonexistent"}).errno == errno.ENOENT


def test_a_path_with_a_slash_is_taken_relative_to_cwd(tmp_path: Path) -> None:
    executable(tmp_path / "tool")
    check_executable("./tool", env={}, cwd=tmp_path)
    check_executable(str(tmp_path / "tool"), env={}, cwd=Path("/"))
    missing = raised("./tool", {}, cwd=tmp_path.parent)
    assert missing.errno == errno.ENOENT
    assert missing.filename == "./tool"  # as subprocess names it


def test_not_executable_or_a_directory_is_denied(tmp_path: Path) -> None:
    plain = executable(tmp_path / "plain", mode=0o644)
    assert raised(str(plain), {}).errno == errno.EACCES
    assert raised(str(tmp_path), {}).errno == errno.EACCES
    # execvpe: a denied match is reported over the directories that had nothing.
    assert raised("plain", {"PATH": f"{tmp_path}:/nonexistent"}).errno == errno.EACCES


def test_a_missing_interpreter_is_what_execve_reports(tmp_path: Path) -> None:
    broken = executable(tmp_path / "oz", "#!/nonexistent/interpreter -x\n")
    error = raised(str(broken), {})
    assert error.errno == errno.ENOENT
    assert isinstance(error, FileNotFoundError)
    assert shebang_interpreter(broken) == "/nonexistent/interpreter"
    # execvpe goes on past it to the next directory of PATH.
    other = tmp_path / "other"
    other.mkdir()
    executable(other / "oz")
    check_executable("oz", env={"PATH": f"{tmp_path}:{other}"})


def test_binaries_and_empty_shebangs_have_no_interpreter(tmp_path: Path) -> None:
    assert shebang_interpreter("/bin/sh") is None
    assert shebang_interpreter(executable(tmp_path / "bare", "#!\n")) is None
