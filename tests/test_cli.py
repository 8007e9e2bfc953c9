"""The ``ozw`` command line: commands, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ozw import cli
from ozw.config import (
    BACKEND_NAMES,
    CliOverrides,
    WorkerConfig,
    load_config,
    overrides_from_args,
)

NO_KEY_ENV = {k: v for k, v in os.environ.items() if k not in ("WARP_API_KEY", "OZW_DEV_API_KEY")}


@pytest.fixture(autouse=True)
def _no_api_key_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARP_API_KEY", raising=False)
    monkeypatch.delenv("OZW_DEV_API_KEY", raising=False)


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m ozw ARGS`` as a real process, without the host's API keys."""
    return subprocess.run(
        [sys.executable, "-m", "ozw", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=NO_KEY_ENV,
        timeout=60,
        check=False,
    )


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("ozw: error: ")
    return lines[0]


# --------------------------------------------------------------------------- subprocess


def test_module_help(tmp_path: Path) -> None:
    result = run_module("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("run", "config", "dev-server"):
        assert command in result.stdout


def test_run_help_describes_every_flag(tmp_path: Path) -> None:
    result = run_module("run", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in ("--config", "--backend", "--worker-id", "--api-key", "--volume", "--env",
                 "--no-cleanup", "--max-concurrent-tasks", "--idle-on-complete",
                 "--target-dir", "--task-timeout", "--shutdown-grace"):  # fmt: skip
        assert flag in result.stdout


def test_broken_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "worker.toml"
    config.write_text('worker_id = "w"\n[backend.direct]\nworkspace_rot = "/x"\n')
    result = run_module("--config", str(config), "--api-key", "k", cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert line == f"ozw: error: {config}: backend.direct.workspace_rot: unknown key"


def test_missing_config_file_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_module("run", "--config-file", "absent.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result.stderr) == "ozw: error: absent.toml: no such file"


def test_run_without_api_key_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_module("run", "--worker-id", "w1", cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "--api-key" in line
    assert "WARP_API_KEY" in line


def test_version(tmp_path: Path) -> None:
    result = run_module("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("ozw ")


# --------------------------------------------------------------------------- in process


def test_bare_ozw_means_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "worker_id: required" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["run"]),
        (["--worker-id", "w"], ["run", "--worker-id", "w"]),
        (["--help"], ["--help"]),
        (["--version"], ["--version"]),
        (["config", "show"], ["config", "show"]),
    ],
)
def test_normalise_argv(argv: list[str], expected: list[str]) -> None:
    assert cli.normalise_argv(argv) == expected


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--backend", "podman"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_flags_become_overrides() -> None:
    args = cli.build_parser().parse_args(
        ["run", "--config-file", "c.toml", "--backend", "docker", "--worker-id", "w",
         "-v", "/a:/a", "--volume", "/b:/b", "-e", "A", "--env", "B=1", "--no-cleanup",
         "--max-concurrent-tasks", "3", "--task-timeout", "1h", "--shutdown-grace", "5s",
         "--idle-on-complete", "45m", "--log-level", "debug", "--log-format", "json",
         "--websocket-url", "ws://h/ws", "--server-root-url", "http://h", "--api-key", "k"]
    )  # fmt: skip
    assert args.config == "c.toml"
    assert overrides_from_args(args) == CliOverrides(
        backend="docker",
        worker_id="w",
        api_key="k",
        websocket_url="ws://h/ws",
        server_root_url="http://h",
        log_level="debug",
        log_format="json",
        no_cleanup=True,
        volumes=("/a:/a", "/b:/b"),
        env=("A", "B=1"),
        max_concurrent_tasks=3,
        idle_on_complete="45m",
        task_timeout="1h",
        shutdown_grace="5s",
    )


def test_run_hands_the_config_to_the_runner(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ozw import runner

    seen: list[WorkerConfig] = []

    def fake_run(config: WorkerConfig) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setenv("WARP_API_KEY", "from-env")
    config = tmp_path / "w.toml"
    config.write_text('worker_id = "file"\ncleanup = true\n')
    assert cli.main(["--config", str(config), "--worker-id", "flag", "--no-cleanup"]) == 0
    (got,) = seen
    assert (got.worker_id, got.cleanup, got.api_key) == ("flag", False, "from-env")


def test_config_show_prints_the_merged_config_without_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "w.toml"
    config.write_text('worker_id = "file"\nmax_concurrent_tasks = 1\n')
    argv = ["config", "show", "--config", str(config), "--max-concurrent-tasks", "4",
            "--api-key", "sk-secret", "-e", "A=1"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "sk-secret" not in out
    assert "max_concurrent_tasks = 4" in out
    shown = tmp_path / "shown.toml"
    shown.write_text(out)
    loaded = load_config(str(shown), CliOverrides(), {})
    assert loaded.max_concurrent_tasks == 4
    assert loaded.worker_id == "file"


def test_config_show_broken_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "w.toml"
    config.write_text('worker_id = "w"\ncleanup = "no"\n')
    assert cli.main(["config", "show", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert one_error_line(captured.err).endswith("cleanup: expected a boolean, got a string")


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_config_init_writes_a_file_that_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, backend: str
) -> None:
    output = tmp_path / "sub" / "worker.toml"
    assert cli.main(["config", "init", "--backend", backend, "--output", str(output)]) == 0
    assert load_config(str(output), CliOverrides(), {}).backend_name == backend


def test_config_init_defaults_to_config_worker_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["config", "init"]) == 0
    config = load_config("config/worker.toml", CliOverrides(), {})
    assert config.backend_name == "docker"


def test_config_init_refuses_to_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "worker.toml"
    output.write_text("mine\n")
    assert cli.main(["config", "init", "--output", str(output)]) == 2
    assert "--force" in one_error_line(capsys.readouterr().err)
    assert output.read_text() == "mine\n"
    assert cli.main(["config", "init", "--output", str(output), "--force"]) == 0
    assert output.read_text() != "mine\n"


def test_config_init_to_stdout(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["config", "init", "--backend", "direct", "--output", "-"]) == 0
    out = capsys.readouterr().out
    assert "[backend.direct]" in out
    path = tmp_path / "w.toml"
    path.write_text(out)
    assert load_config(str(path), CliOverrides(), {}).backend_name == "direct"


def test_dev_server_passes_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from ozw import devserver

    calls: list[dict[str, Any]] = []

    def fake_serve_cli(**kwargs: Any) -> int:
        calls.append(kwargs)
        return 0

    monkeypatch.setattr(devserver, "serve_cli", fake_serve_cli)
    assert cli.main(["dev-server"]) == 0
    monkeypatch.setenv("OZW_DEV_API_KEY", "from-env")
    argv = ["dev-server", "--host", "0.0.0.0", "--port", "0", "--assignments", "a.jsonl",
            "--record", "r.jsonl"]  # fmt: skip
    assert cli.main(argv) == 0
    assert cli.main(["dev-server", "--api-key", "flag"]) == 0
    assert calls == [
        {"host": "127.0.0.1", "port": 8765, "api_key": "dev-key", "assignments": None,
         "record": None},
        {"host": "0.0.0.0", "port": 0, "api_key": "from-env", "assignments": "a.jsonl",
         "record": "r.jsonl"},
        {"host": "127.0.0.1", "port": 8765, "api_key": "flag", "assignments": None,
         "record": None},
    ]  # fmt: skip


def test_dev_server_refuses_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dev-server", "--port", "70000"]) == 2
    assert "--port" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "max_tasks", "metrics"),
    [
        (["run", "--worker-id", "w"], None, None),
        (["run", "--worker-id", "w", "--once"], 1, None),
        (["run", "--worker-id", "w", "--max-tasks", "5", "--metrics-addr", ":9090"], 5, ":9090"),
    ],
)
def test_one_shot_and_metrics_flags(
    argv: list[str], max_tasks: int | None, metrics: str | None
) -> None:
    args = cli.build_parser().parse_args(argv)
    config = load_config(None, overrides_from_args(args), {})
    assert config.max_tasks == max_tasks
    assert config.metrics_addr == metrics


def test_bad_max_tasks_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "show", "--worker-id", "w", "--max-tasks", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--max-tasks" in err[0]
