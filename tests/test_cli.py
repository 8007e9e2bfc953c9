"""The ``ozw`` command line: commands, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import errno
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from ozw.cli import main as cli
from ozw.cli.exit_status import TRACEBACK_ENV, outcome_of
from ozw.config import (
    BACKEND_NAMES,
    CliOverrides,
    WorkerConfig,
    load_config,
    overrides_from_args,
)
from tests.support.ozw_command import OZW, one_error_line, run_ozw
from tests.support.ozw_process import REPO


@pytest.fixture(autouse=True)
def _no_api_key_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARP_API_KEY", raising=False)
    monkeypatch.delenv("OZW_DEV_API_KEY", raising=False)


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m ozw ARGS`` as a real process, without the host's API keys."""
    return run_ozw(*args, cwd=cwd, module=True)


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
    assert line == (
        f"ozw: error: {config}: backend.direct.workspace_rot: unknown key "
        "(did you mean `workspace_root`?)"
    )


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
    assert cli.main(["--worker-id", "w"]) == 2
    assert "no API key" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["run"]),
        (["--worker-id", "w"], ["run", "--worker-id", "w"]),
        (["--help"], ["--help"]),
        (["--version"], ["--version"]),
        (["config", "show"], ["config", "show"]),
        (["smoke", "--timeout", "-1s"], ["smoke", "--timeout=-1s"]),
        (["--task-timeout", "-.5m", "-v"], ["run", "--task-timeout=-.5m", "-v"]),
        (["smoke", "--timeout=5s", "-1"], ["smoke", "--timeout=5s", "-1"]),
        (["smoke", "--", "-1"], ["smoke", "--", "-1"]),
        (["smoke", "-t", "-1"], ["smoke", "-t", "-1"]),
    ],
)
def test_normalise_argv(argv: list[str], expected: list[str]) -> None:
    assert cli.normalise_argv(argv) == expected


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--log-level", "loud"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("ozw: error: argument --log-level: invalid choice: 'loud'")
    assert line.endswith("(see `ozw run --help`)")


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
        backend="docker", worker_id="w", api_key="k",
        websocket_url="ws://h/ws", server_root_url="http://h",
        log_level="debug", log_format="json",
        no_cleanup=True, volumes=("/a:/a", "/b:/b"), env=("A", "B=1"),
        max_concurrent_tasks=3, idle_on_complete="45m", task_timeout="1h", shutdown_grace="5s",
    )  # fmt: skip


def test_run_hands_the_config_to_the_runner(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ozw import worker

    seen: list[WorkerConfig] = []

    def fake_run(config: WorkerConfig) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(worker, "run", fake_run)
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
    from ozw.dev import command as dev_command

    calls: list[dict[str, Any]] = []

    def fake_serve_cli(**kwargs: Any) -> int:
        calls.append(kwargs)
        return 0

    monkeypatch.setattr(dev_command, "serve_cli", fake_serve_cli)
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


# --------------------------------------------------------------------------- first run


def test_the_worker_config_is_not_tracked_so_init_works_on_a_fresh_checkout() -> None:
    def git(*args: str) -> int:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=False).returncode

    assert git("ls-files", "--error-unmatch", "config/worker.toml") != 0
    assert git("check-ignore", "-q", "config/worker.toml") == 0
    assert git("ls-files", "--error-unmatch", "config/examples/docker.toml") == 0


def test_config_init_in_a_checkout_without_a_config(tmp_path: Path) -> None:
    (tmp_path / "config" / "examples").mkdir(parents=True)  # as a fresh clone has it
    result = run_ozw("config", "init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "config" / "worker.toml"
    assert result.stderr.startswith(f"wrote {written.relative_to(tmp_path)}")
    assert load_config(str(written), CliOverrides(), {}).worker_id == "my-worker"


def test_bare_ozw_says_what_to_do_first(tmp_path: Path) -> None:
    result = run_ozw(cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "`ozw demo`" in line
    assert "`ozw config init`" in line
    assert result.stdout == ""


def test_help_shows_defaults(tmp_path: Path) -> None:
    run_help = " ".join(run_ozw("run", "--help", cwd=tmp_path).stdout.split())
    for shown in ("--shutdown-grace DURATION on Ctrl-C / SIGTERM, time for teardown "
                  "(default: 30s)", "(default: docker)", "log line format (default: human)",
                  "(default: https://app.warp.dev)", "--cleanup [true|false]"):  # fmt: skip
        assert shown in run_help
    dev_help = " ".join(run_ozw("dev-server", "--help", cwd=tmp_path).stdout.split())
    assert "(default: 8765)" in dev_help
    assert "(default: 127.0.0.1)" in dev_help
    init_help = " ".join(run_ozw("config", "init", "--help", cwd=tmp_path).stdout.split())
    assert "(default: config/worker.toml)" in init_help


@pytest.mark.parametrize(
    ("command", "absent", "present"),
    [
        (["run"], [], ["--api-key", "--once", "--websocket-url", "--proxy-url", "--log-level"]),
        (["smoke"], ["--api-key", "--once", "--max-tasks", "--websocket-url", "--proxy-url",
                     "--metrics-addr"], ["--backend", "--volume", "--timeout", "--task"]),
        (["check"], ["--once", "--max-tasks", "--log-level"], ["--api-key", "--websocket-url"]),
        (["config", "init"], ["--worker-id", "--api-key"], ["--backend", "--output"]),
        (["config", "import"], ["--worker-id", "--backend"], ["--output", "--force"]),
        (["demo"], ["--worker-id", "--backend"], ["--log-file", "--metrics-addr"]),
    ],
)  # fmt: skip
def test_each_command_lists_only_the_flags_it_uses(
    tmp_path: Path, command: list[str], absent: list[str], present: list[str]
) -> None:
    result = run_ozw(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    flags = set(re.findall(r"--[a-z][a-z-]*", result.stdout))
    assert flags.isdisjoint(absent), flags & set(absent)
    assert flags.issuperset(present), set(present) - flags


def test_config_show_without_a_file_prints_the_defaults(tmp_path: Path) -> None:
    result = run_ozw("config", "show", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "# worker_id: not set (required" in result.stdout
    shown = tmp_path / "shown.toml"
    shown.write_text(result.stdout)
    defaults = load_config(str(shown), CliOverrides(worker_id="w"), {})
    assert defaults == WorkerConfig(worker_id="w")


# --------------------------------------------------------------------------- one error line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["frobnicate"], "ozw: error: argument COMMAND: invalid choice: 'frobnicate'"),
        (["config"], "ozw: error: the following arguments are required: ACTION"),
        (["run", "--max-concurrent-tasks", "x"],
         "ozw: error: argument --max-concurrent-tasks: invalid int value: 'x'"),
        (["config", "show", "--cleanup=maybe"],
         "ozw: error: argument --cleanup: expected true or false, got 'maybe'"),
        (["check", "--config", "absent.toml"], "ozw: error: absent.toml: no such file"),
        (["smoke", "--worker-id", "w", "--timeout", "soon"], "ozw: error: --timeout: 'soon'"),
        (["dev-server", "--assignments", "absent.jsonl"], "ozw: error: "),
    ],
)  # fmt: skip
def test_every_usage_error_is_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run_ozw(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result.stderr).startswith(expected)


def test_ctrl_c_on_the_dev_server_prints_no_traceback(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [str(OZW), "dev-server", "--port", "0"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # SIGINT is not ignored, as in a terminal
    )
    assert process.stderr is not None
    assert "listening on" in process.stderr.readline()  # the event: it is serving
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    # 0 when the command stops cleanly itself, 130 (interrupted) from the CLI's edge.
    assert process.wait(timeout=30) in (0, 130)
    assert "Traceback" not in rest
    assert rest.count("\n") <= 1


def test_an_unexpected_error_is_one_line_with_a_way_to_the_traceback() -> None:
    group = BaseExceptionGroup("nursery", [ValueError("bad\nthing"), KeyError("k")])
    assert outcome_of(group) == (
        1, f"ozw: error: unexpected ValueError: bad thing (set {TRACEBACK_ENV}=1 for the traceback)"
    )  # fmt: skip


def test_ctrl_c_inside_a_group_is_an_interruption() -> None:
    group = BaseExceptionGroup("nursery", [KeyboardInterrupt(), ExceptionGroup("g", [OSError()])])
    assert outcome_of(group) == (130, None)


def test_a_failure_beside_its_cancelled_siblings_is_the_cause() -> None:
    async def fail_beside_a_sleeper() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.lowlevel.checkpoint()
            raise OSError(errno.EADDRINUSE, "Address already in use")

    with pytest.raises(BaseExceptionGroup) as caught:
        trio.run(fail_beside_a_sleeper)
    assert outcome_of(caught.value) == (1, "ozw: error: Address already in use")
