"""``ozw smoke`` as a real process: one line when the backend cannot run anything."""

from __future__ import annotations

from pathlib import Path

from tests.ozw_command import one_error_line, run_ozw
from tests.ozw_process import REPO


def test_an_unreachable_docker_engine_is_one_line(tmp_path: Path) -> None:
    result = run_ozw(
        "smoke",
        "--config",
        str(REPO / "config" / "examples" / "docker.toml"),
        "--timeout",
        "20s",
        cwd=tmp_path,
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    line = one_error_line(result.stderr)
    assert line.startswith("ozw: error: docker backend: cannot reach the Docker daemon")
    assert result.stdout == ""


def test_a_missing_agent_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "direct.toml"
    config.write_text(
        f'worker_id = "smoke-test"\n[backend.direct]\nworkspace_root = "{tmp_path / "ws"}"\n'
        f'oz_path = "{tmp_path / "no-such-oz"}"\n'
    )
    result = run_ozw("smoke", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert one_error_line(result.stderr) == (
        f"ozw: error: direct backend: oz CLI {tmp_path / 'no-such-oz'} does not exist"
    )
