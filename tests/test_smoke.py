"""``ozw smoke`` as a real process: one line when the backend cannot run, timeouts, Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import trio

from tests.support.ozw_command import HOST_ENV, OZW, one_error_line, run_ozw, smoke_task
from tests.support.ozw_process import REPO, STANDIN_AGENT
from tests.support.pipe_lines import LineReader


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


def test_a_failed_dispatch_lists_its_stderr_once_in_the_last_output_lines(
    tmp_path: Path,
) -> None:
    config = tmp_path / "command.toml"
    config.write_text(
        'worker_id = "smoke-test"\n[backend.command]\n'
        'dispatch_command = "echo out-line; echo err-line >&2; exit 3"\n'
    )
    result = run_ozw("smoke", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    tail = lines[lines.index("last output lines:") + 1 :]
    # Two pipes: their lines may be relayed in either order.
    assert sorted(tail) == ["  [dispatch stderr] err-line", "  [dispatch stdout] out-line"]


def test_a_timeout_is_reported_within_timeout_and_kill_grace(tmp_path: Path) -> None:
    config = tmp_path / "direct.toml"
    config.write_text(
        f'worker_id = "smoke-test"\n[backend.direct]\nworkspace_root = "{tmp_path / "ws"}"\n'
        f'oz_path = "{STANDIN_AGENT}"\nkill_grace = "1s"\n'
    )
    # An agent that ignores SIGTERM: only the kill after kill_grace ends it.
    prompt = "echo working; ignore sigterm; sleep 120"
    task = smoke_task(tmp_path, "slow-1", prompt)
    result = run_ozw(
        "smoke", "--config", str(config), "--task", str(task), "--timeout", "2s", cwd=tmp_path
    )
    assert result.returncode == 1, result.stdout + result.stderr
    first, *rest = result.stdout.splitlines()
    found = re.fullmatch(
        r"smoke: FAILED: task slow-1 timed out after 2s \(stopped and reported in ([0-9.]+)s\)",
        first,
    )
    assert found, result.stdout
    # timeout (2s) + kill_grace (1s), with room for a loaded machine; the agent itself
    # would have run for 120s.
    assert 2 <= float(found[1]) < 2 + 1 + 10
    assert "  [agent stdout] working" in rest
    # The log says the agent did not stop on SIGTERM and was killed.
    assert "task=slow-1 agent did not exit within 1s of SIGTERM (kill_grace): killed" in (
        result.stderr
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_a_timeout_of_zero_is_a_usage_error(tmp_path: Path) -> None:
    result = run_ozw(
        "smoke", "--config", str(REPO / "config/examples/direct.toml"), "--timeout", "0s",
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert one_error_line(result.stderr) == "ozw: error: --timeout: '0s' is not more than 0"


async def test_ctrl_c_stops_the_smoke_run_in_one_line_with_exit_130(tmp_path: Path) -> None:
    config = tmp_path / "direct.toml"
    config.write_text(
        f'worker_id = "smoke-test"\n[backend.direct]\nworkspace_root = "{tmp_path / "ws"}"\n'
        f'oz_path = "{STANDIN_AGENT}"\nkill_grace = "1s"\n'
    )
    task = smoke_task(tmp_path, "long-1", "echo started; sleep 120")
    argv = [str(OZW), "smoke", "--config", str(config), "--task", str(task), "--timeout", "5m"]
    smoke = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=HOST_ENV
    )
    try:
        assert smoke.stdout is not None
        assert smoke.stderr is not None
        await LineReader(smoke.stderr).next_matching("task=long-1 [agent stdout] started")
        smoke.send_signal(signal.SIGINT)
        with trio.fail_after(60):
            code = await smoke.wait()
        out = (await smoke.stdout.receive_some(65536)).decode()
    finally:
        if smoke.returncode is None:
            smoke.kill()
    assert code == 130
    assert out.splitlines() == ["smoke: interrupted: task long-1 was stopped before it ended"]
