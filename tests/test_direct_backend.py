"""The direct backend with real processes and the stand-in agent (examples/agent/oz)."""

# The tests inspect small files under tmp_path synchronously on purpose: offloading a
# stat() to a thread would only obscure them.
# ruff: noqa: ASYNC240

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from ozw.backends.base import ExecuteResult, TaskRun
from ozw.backends.direct import ENV_FILE_NAME, ROOT_MARKER, DirectBackend
from ozw.config import DirectConfig, EnvEntry
from ozw.tasks.failures import BackendUnavailable, FailureReason, TaskFailure
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog
from tests.support.event_loops import on_both_loops
from tests.support.log_lines import Lines
from tests.support.params import make_params as task_params
from tests.support.procs import processes_carrying, wait_until_gone

AGENT = Path(__file__).resolve().parents[1] / "examples" / "agent" / "oz"
# The stand-in's `#!/usr/bin/env python3` must find a python on the agent's PATH.
TEST_PATH = os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"])
BASE_ARGS = (
    "agent",
    "run",
    "--share",
    "team:edit",
    "--task-id",
    "run-1",
    "--sandboxed",
    "--server-root-url",
    "https://app.warp.dev",
    "--mcp",
    '{"github":{"args":["-y","x y"],"command":"npx"}}',
    "--foo",
    "",
    "two words",
    "$HOME; rm -rf /",
    "ünïcødé",
    "--idle-on-complete",
)


# ------------------------------------------------------------------------ helpers


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = made_dir(tmp_path / "home")
    return path


@pytest.fixture
def environ(home: Path, tmp_path: Path) -> dict[str, str]:
    """The worker's environment: with secrets that must never reach the agent."""
    tmp = made_dir(tmp_path / "tmp")
    return {
        "HOME": str(home),
        "PATH": TEST_PATH,
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "WARP_API_KEY": "wk-very-secret",
        "OTHER_SECRET": "s3cret",
    }


def make_backend(
    tmp_path: Path,
    environ: Mapping[str, str],
    *,
    cleanup: bool = True,
    **config: Any,
) -> DirectBackend:
    settings: dict[str, Any] = {
        "workspace_root": str(tmp_path / "ws"),
        "oz_path": str(AGENT),
        "kill_grace": 0.5,
    }
    settings.update(config)
    return DirectBackend(DirectConfig(**settings), cleanup=cleanup, environ=environ)


@pytest.fixture
def marker() -> str:
    """A unique ``TEST_MARKER`` value: this test's processes, found by their environment."""
    return f"ozw-test-{uuid.uuid4()}"


def made_dir(path: Path) -> Path:
    path.mkdir()
    return path


def touch(path: Path) -> str:
    """A command that creates ``path``: proof that it ran."""
    return f"touch {shlex.quote(str(path))}"


async def teardown_shielded(run: TaskRun) -> None:
    with anyio.CancelScope(shield=True):
        await run.teardown()


async def checked_backend(
    tmp_path: Path, environ: Mapping[str, str], **config: Any
) -> DirectBackend:
    """A backend past its start-up check (which creates the workspace root)."""
    backend = make_backend(tmp_path, environ, **config)
    await backend.check()
    return backend


def make_params(
    task_id: str = "run-1",
    *,
    env: Mapping[str, str] | None = None,
    prompt: str | None = None,
    harness: str | None = None,
    base_args: tuple[str, ...] = BASE_ARGS,
) -> TaskParams:
    task_env = {"GIT_TERMINAL_PROMPT": "0", **(env or {})}
    if prompt is not None:
        task_env["OZ_STANDIN_PROMPT"] = prompt
    return task_params(
        task_id,
        env=task_env,
        base_args=base_args,
        harness=harness,
        server_root_url="https://app.warp.dev",
    )


async def run_task(backend: DirectBackend, params: TaskParams) -> ExecuteResult | TaskFailure:
    """setup → execute → teardown (shielded), as the lifecycle drives them."""
    run = backend.open_task(params, TaskLog(params.task_id))
    try:
        await run.setup()
        return await run.execute()
    except TaskFailure as failure:
        return failure
    finally:
        with anyio.CancelScope(shield=True):
            await run.teardown()


def read_record(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def failure(result: ExecuteResult | TaskFailure) -> TaskFailure:
    assert isinstance(result, TaskFailure), result
    return result


# ----------------------------------------------------------------- start-up check


@on_both_loops
async def test_check_accepts_a_good_setup_and_creates_the_root(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    await make_backend(tmp_path, environ).check()
    assert (tmp_path / "ws").is_dir()
    assert (tmp_path / "ws").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "ws" / ROOT_MARKER).is_file()


@on_both_loops
async def test_check_finds_oz_on_path(tmp_path: Path, environ: dict[str, str]) -> None:
    bin_dir = made_dir(tmp_path / "bin")
    (bin_dir / "oz").symlink_to(AGENT)
    environ["PATH"] = f"{bin_dir}{os.pathsep}{TEST_PATH}"
    backend = await checked_backend(tmp_path, environ, oz_path=None)
    assert backend.oz_command() == str(bin_dir / "oz")


def _not_executable(tmp_path: Path) -> str:
    path = tmp_path / "oz-plain"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o644)
    return str(path)


def _under_a_file(tmp_path: Path) -> str:
    (tmp_path / "a-file").write_text("")
    return str(tmp_path / "a-file" / "ws")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (lambda t: {"oz_path": str(t / "missing" / "oz")}, "missing/oz does not exist"),
        (lambda t: {"oz_path": _not_executable(t)}, "oz-plain is not executable"),
        (lambda t: {"oz_path": None}, "no `oz` on PATH"),
        (lambda t: {"workspace_root": _under_a_file(t)}, "cannot use workspace root"),
        (lambda t: {"target_dir": str(t / "nope")}, "target_dir"),
        (lambda t: {"target_dir": _not_executable(t)}, "is not a directory"),
    ],
    ids=[
        "missing-oz",
        "non-executable-oz",
        "no-oz-on-path",
        "root",
        "target-missing",
        "target-file",
    ],
)
@on_both_loops
async def test_check_failures_are_one_clear_line(
    tmp_path: Path, environ: dict[str, str], config: Any, expected: str
) -> None:
    environ["PATH"] = "/nonexistent"
    backend = make_backend(tmp_path, environ, **config(tmp_path))
    with pytest.raises(BackendUnavailable) as info:
        await backend.check()
    message = str(info.value)
    assert message.startswith("direct backend: ")
    assert expected in message
    assert "\n" not in message


# ---------------------------------------------------------- the agent's process


@on_both_loops
async def test_agent_argv_cwd_and_environment(
    tmp_path: Path, environ: dict[str, str], home: Path
) -> None:
    record = tmp_path / "record.json"
    setup = (
        'printf "%s\\n" "FROM_FILE=file value" "CONFIGURED=overridden by file" '
        '"TASK_VAR=overridden too" "GIT_CONFIG_GLOBAL=/tmp/evil" "BARE" >> "$OZ_ENVIRONMENT_FILE"'
    )
    backend = make_backend(
        tmp_path,
        environ,
        setup_command=setup,
        environment=(
            EnvEntry("CONFIGURED", "configured"),
            EnvEntry("PLAIN", "configured"),
            EnvEntry("LANG"),
            EnvEntry("NOT_IN_WORKER"),
        ),
    )
    await backend.check()
    params = make_params(env={"OZ_STANDIN_RECORD": str(record), "TASK_VAR": "task"})
    assert await run_task(backend, params) is ExecuteResult.COMPLETED

    seen = read_record(record)
    workspace = os.path.realpath(tmp_path / "ws" / "run-1")
    assert seen["argv"] == [str(AGENT), *BASE_ARGS]
    assert seen["cwd"] == workspace
    env = seen["env"]
    assert "WARP_API_KEY" not in env
    assert "OTHER_SECRET" not in env
    assert "wk-very-secret" not in json.dumps(env)
    assert env["HOME"] == str(home)
    assert env["PATH"] == TEST_PATH
    assert env["TMPDIR"] == environ["TMPDIR"]
    assert env["TASK_ID"] == "run-1"
    assert env["LANG"] == "C.UTF-8"  # configured entry inheriting the worker's value
    assert "NOT_IN_WORKER" not in env
    assert env["PLAIN"] == "configured"
    assert env["FROM_FILE"] == "file value"
    assert env["CONFIGURED"] == "overridden by file"
    assert env["TASK_VAR"] == "overridden too"
    assert "BARE" not in env
    assert env["GIT_CONFIG_GLOBAL"] == os.path.join(workspace, ".gitconfig")
    assert "CLAUDE_CONFIG_DIR" not in env
    assert "CODEX_HOME" not in env
    # Nothing the worker did not put there on purpose.
    expected = {"HOME", "PATH", "TMPDIR", "LANG", "PLAIN", "CONFIGURED", "FROM_FILE"}
    expected |= set(params.env) | {"GIT_CONFIG_GLOBAL"}
    assert set(env) - {"PWD", "SHLVL", "_"} == expected
    # cleanup is on: the workspace went after teardown.
    assert not os.path.exists(workspace)


@on_both_loops
async def test_scripts_get_the_worker_environment_and_oz_variables(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    dump = "{ env; echo --; pwd; } > {out}"
    backend = make_backend(
        tmp_path,
        environ,
        setup_command=dump.replace("{out}", shlex.quote(str(tmp_path / "setup.txt"))),
        teardown_command=dump.replace("{out}", shlex.quote(str(tmp_path / "teardown.txt"))),
        environment=(EnvEntry("CONFIGURED", "yes"),),
    )
    params = make_params(env={"TASK_VAR": "task", "OZ_RUN_ID": "spoofed"})
    assert await run_task(backend, params) is ExecuteResult.COMPLETED

    workspace = os.path.realpath(tmp_path / "ws" / "run-1")

    def parse(name: str) -> tuple[dict[str, str], str]:
        text, cwd = (tmp_path / name).read_text().split("--\n")
        pairs = (line.partition("=") for line in text.splitlines() if "=" in line)
        return {k: v for k, _, v in pairs}, cwd.strip()

    for name in ("setup.txt", "teardown.txt"):
        env, cwd = parse(name)
        assert cwd == workspace
        assert "WARP_API_KEY" not in env  # the worker's own credential stays out
        assert env["OTHER_SECRET"] == "s3cret"  # the rest of the worker environment
        assert env["OZ_WORKSPACE_ROOT"] == workspace
        assert env["OZ_WORKER_BACKEND"] == "direct"
        assert env["OZ_RUN_ID"] == "run-1"
        assert env["GIT_CONFIG_GLOBAL"] == os.path.join(workspace, ".gitconfig")
    setup_env, _ = parse("setup.txt")
    teardown_env, _ = parse("teardown.txt")
    assert setup_env["OZ_ENVIRONMENT_FILE"] == os.path.join(workspace, ENV_FILE_NAME)
    assert "OZ_ENVIRONMENT_FILE" not in teardown_env
    assert setup_env["TASK_VAR"] == "task"
    assert "TASK_VAR" not in teardown_env  # as the Go worker: no task variable in teardown
    assert setup_env["CONFIGURED"] == "yes"
    assert "CONFIGURED" not in teardown_env  # nor a configured value


@on_both_loops
async def test_scripts_get_the_worker_key_only_when_configured(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    # Teardown runs git in a workspace the agent controlled: core.fsmonitor, a hook or
    # an alias there runs code the agent chose, with the script's environment.
    fsmonitor = tmp_path / "fsmonitor.sh"
    fsmonitor.write_text(f"#!/bin/sh\nenv > {shlex.quote(str(tmp_path / 'leak.txt'))}\n")
    fsmonitor.chmod(0o755)
    prompt = f"git init -q .; git config core.fsmonitor {fsmonitor}"
    teardown = "git status --porcelain >/dev/null 2>&1; env > ../teardown-env.txt"
    for configured, expected in (((), None), ((EnvEntry("WARP_API_KEY"),), "wk-very-secret")):
        backend = make_backend(tmp_path, environ, teardown_command=teardown, environment=configured)
        assert await run_task(backend, make_params(prompt=prompt)) is ExecuteResult.COMPLETED
        for name in ("leak.txt", "ws/teardown-env.txt"):
            text = (tmp_path / name).read_text()
            env = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
            assert env.get("WARP_API_KEY") == expected, name
            (tmp_path / name).unlink()


@on_both_loops
async def test_git_global_config_goes_to_the_task_not_home(
    tmp_path: Path, environ: dict[str, str], home: Path
) -> None:
    backend = make_backend(tmp_path, environ, cleanup=False)
    params = make_params(prompt="git config --global user.name X; git config --global user.name")
    assert await run_task(backend, params) is ExecuteResult.COMPLETED
    gitconfig = tmp_path / "ws" / "run-1" / ".gitconfig"
    assert "name = X" in gitconfig.read_text()
    assert not (home / ".gitconfig").exists()
    assert not (home / ".config").exists()


@pytest.mark.parametrize(
    ("harness", "variable", "dirname"),
    [("claude", "CLAUDE_CONFIG_DIR", ".claude"), ("codex", "CODEX_HOME", ".codex")],
)
@on_both_loops
async def test_harness_config_homes(
    tmp_path: Path, environ: dict[str, str], harness: str, variable: str, dirname: str
) -> None:
    record = tmp_path / "record.json"
    backend = make_backend(
        tmp_path,
        environ,
        cleanup=False,
        setup_command=f'echo {variable}=/elsewhere >> "$OZ_ENVIRONMENT_FILE"',
    )
    params = make_params(harness=harness, env={"OZ_STANDIN_RECORD": str(record)})
    assert await run_task(backend, params) is ExecuteResult.COMPLETED
    home = os.path.join(os.path.realpath(tmp_path / "ws" / "run-1"), dirname)
    assert read_record(record)["env"][variable] == home
    assert os.path.isdir(home)


@on_both_loops
async def test_output_is_relayed_live_complete_and_in_order(
    tmp_path: Path, environ: dict[str, str], lines: Lines
) -> None:
    backend = make_backend(tmp_path, environ, setup_command="echo provisioning; echo oops >&2")
    params = make_params(prompt="print 10000 lines; stderr finished")
    assert await run_task(backend, params) is ExecuteResult.COMPLETED
    assert lines.output("run-1", "agent stdout") == [f"line {i}" for i in range(10000)]
    assert lines.output("run-1", "agent stderr") == ["finished"]
    assert lines.output("run-1", "setup stdout") == ["provisioning"]
    assert lines.output("run-1", "setup stderr") == ["oops"]


# ------------------------------------------------------------------- outcomes


@pytest.mark.parametrize(("prompt", "code"), [("exit 3", 3), ("fail", 1)])
@on_both_loops
async def test_agent_failure_carries_its_exit_code(
    tmp_path: Path, environ: dict[str, str], lines: Lines, prompt: str, code: int
) -> None:
    backend = make_backend(tmp_path, environ)
    result = failure(await run_task(backend, make_params(prompt=prompt)))
    assert result.reason is FailureReason.AGENT_INVOCATION
    assert result.exit_code == code
    assert result.cause == f"agent exited with exit code {code}"
    if prompt == "fail":
        assert lines.output("run-1", "agent stderr") == [
            "error: the stand-in agent was told to fail"
        ]


@on_both_loops
async def test_agent_that_cannot_start(tmp_path: Path, environ: dict[str, str]) -> None:
    broken = tmp_path / "oz"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    backend = make_backend(tmp_path, environ, oz_path=str(broken))
    await backend.check()  # it exists and is executable; exec still fails
    result = failure(await run_task(backend, make_params()))
    assert result.reason is FailureReason.AGENT_INVOCATION
    assert result.exit_code is None
    assert "could not start the agent" in result.cause


@on_both_loops
async def test_agent_exit_takes_its_daemons_with_it(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    pidfile = tmp_path / "pids"
    backend = make_backend(tmp_path, environ)
    params = make_params(prompt="spawn daemon; exit 0", env={"OZ_STANDIN_PIDFILE": str(pidfile)})
    assert await run_task(backend, params) is ExecuteResult.COMPLETED
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2
    assert await wait_until_gone(pids) == []


# ---------------------------------------------------------------- cancellation


@on_both_loops
async def test_cancel_kills_the_whole_tree_then_teardown_runs(
    tmp_path: Path, environ: dict[str, str], lines: Lines, marker: str
) -> None:
    pidfile = tmp_path / "pids"
    teardown_marker = tmp_path / "teardown-ran"
    backend = make_backend(tmp_path, environ, teardown_command=touch(teardown_marker))
    params = make_params(
        prompt="ignore sigterm; spawn child; spawn daemon; echo ready; sleep 100",
        env={"OZ_STANDIN_PIDFILE": str(pidfile), "TEST_MARKER": marker},
    )
    ready = lines.event("ready")
    run = backend.open_task(params, TaskLog(params.task_id))
    await run.setup()
    start = anyio.current_time()
    async with anyio.create_task_group() as nursery:
        nursery.start_soon(run.execute)
        with anyio.fail_after(10):
            await ready.wait()
        assert len(processes_carrying(marker)) == 3
        nursery.cancel_scope.cancel()
    # SIGTERM is ignored by all three: SIGKILL after kill_grace (0.5 s).
    assert anyio.current_time() - start < 5
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 3
    assert await wait_until_gone(pids) == []
    assert processes_carrying(marker) == []
    assert backend.runner.live_groups == frozenset()

    await teardown_shielded(run)
    assert teardown_marker.exists()
    assert not (tmp_path / "ws" / "run-1").exists()


@on_both_loops
async def test_cancel_during_setup_kills_the_setup_script(
    tmp_path: Path, environ: dict[str, str], lines: Lines, marker: str
) -> None:
    backend = make_backend(
        tmp_path,
        environ,
        setup_command="trap '' TERM; sleep 100 & echo started; wait",
        environment=(EnvEntry("TEST_MARKER", marker),),
    )
    started = lines.event("started")
    run = backend.open_task(make_params(), TaskLog("run-1"))
    async with anyio.create_task_group() as nursery:
        nursery.start_soon(run.setup)
        with anyio.fail_after(10):
            await started.wait()
        nursery.cancel_scope.cancel()
    assert await wait_until_gone(processes_carrying(marker)) == []
    await teardown_shielded(run)
    assert not (tmp_path / "ws" / "run-1").exists()


@on_both_loops
async def test_setup_timeout_fails_with_setup_command_and_kills_the_group(
    tmp_path: Path, environ: dict[str, str], lines: Lines, marker: str
) -> None:
    teardown_marker = tmp_path / "teardown-ran"
    backend = make_backend(
        tmp_path,
        environ,
        setup_command="sleep 100 & wait",
        setup_timeout=0.3,
        teardown_command=touch(teardown_marker),
        environment=(EnvEntry("TEST_MARKER", marker),),
    )
    result = failure(await run_task(backend, make_params()))
    assert result.reason is FailureReason.SETUP_COMMAND
    assert result.cause == "setup command timed out after 0.3s"
    assert result.exit_code is None
    assert await wait_until_gone(processes_carrying(marker)) == []
    assert teardown_marker.exists()


@pytest.mark.parametrize(
    ("setup_command", "reason", "what"),
    [
        ("true", FailureReason.SETUP_COMMAND, "the setup command"),
        (None, FailureReason.AGENT_INVOCATION, "the agent"),
    ],
)
@on_both_loops
async def test_a_variable_no_process_can_receive_fails_the_task_naming_it(
    tmp_path: Path,
    environ: dict[str, str],
    setup_command: str | None,
    reason: FailureReason,
    what: str,
) -> None:
    backend = make_backend(tmp_path, environ, setup_command=setup_command)
    result = failure(await run_task(backend, make_params(env={"SECRET": "top\0secret"})))
    assert result.reason is reason
    assert result.cause == f"cannot start {what}: environment variable SECRET holds a NUL byte"
    assert not (tmp_path / "ws" / "run-1").exists()


@on_both_loops
async def test_setup_failure_carries_no_exit_code_and_teardown_still_runs(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    teardown_marker = tmp_path / "teardown-ran"
    backend = make_backend(
        tmp_path,
        environ,
        setup_command="exit 4",
        teardown_command=touch(teardown_marker),
    )
    result = failure(await run_task(backend, make_params()))
    assert result.reason is FailureReason.SETUP_COMMAND
    assert result.exit_code is None  # exit_code is the agent's own exit only
    assert result.cause == "setup command exited with exit code 4"
    assert teardown_marker.exists()
    assert not (tmp_path / "ws" / "run-1").exists()


@on_both_loops
async def test_teardown_runs_after_agent_failure(tmp_path: Path, environ: dict[str, str]) -> None:
    teardown_marker = tmp_path / "teardown-ran"
    backend = make_backend(tmp_path, environ, teardown_command=touch(teardown_marker))
    result = failure(await run_task(backend, make_params(prompt="exit 3")))
    assert result.exit_code == 3
    assert teardown_marker.exists()


@pytest.mark.parametrize(
    ("command", "timeout", "cause"),
    [
        ("exit 5", 300.0, "teardown command exited with exit code 5"),
        ("trap '' TERM; sleep 100", 0.2, "teardown command timed out after 0.2s"),
    ],
)
@on_both_loops
async def test_a_teardown_failure_is_raised_after_the_workspace_is_removed(
    tmp_path: Path, environ: dict[str, str], command: str, timeout: float, cause: str
) -> None:
    backend = make_backend(tmp_path, environ, teardown_command=command, teardown_timeout=timeout)
    run = backend.open_task(make_params(), TaskLog("run-1"))
    await run.setup()
    assert await run.execute() is ExecuteResult.COMPLETED
    with pytest.raises(TaskFailure) as caught:
        await run.teardown()
    assert caught.value.reason is FailureReason.TEARDOWN_COMMAND
    assert caught.value.cause == cause
    assert not (tmp_path / "ws" / "run-1").exists()
    assert backend.runner.live_groups == frozenset()
    await run.teardown()  # once only: a second call has nothing left to do


# ------------------------------------------------------------------- workspaces


@pytest.mark.parametrize("task_id", ["", ".", "..", "a/b", "a\\b", "../escape", "/abs"])
@on_both_loops
async def test_unsafe_task_ids_fail_workspace_setup(
    tmp_path: Path, environ: dict[str, str], task_id: str
) -> None:
    backend = await checked_backend(tmp_path, environ)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = failure(await run_task(backend, make_params(task_id)))
    assert result.reason is FailureReason.WORKSPACE_SETUP
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert [p.name for p in (tmp_path / "ws").iterdir()] == [ROOT_MARKER]


@on_both_loops
async def test_symlink_in_the_root_is_never_followed(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    backend = await checked_backend(tmp_path, environ)
    outside = Path(tempfile.mkdtemp(dir=tmp_path))
    (tmp_path / "ws" / "evil").symlink_to(outside)
    result = failure(await run_task(backend, make_params("evil")))
    assert result.reason is FailureReason.WORKSPACE_SETUP
    assert list(outside.iterdir()) == []
    assert (tmp_path / "ws" / "evil").is_symlink()


@on_both_loops
async def test_target_dir_is_shared_kept_and_gets_no_files(
    tmp_path: Path, environ: dict[str, str], home: Path
) -> None:
    target = made_dir(tmp_path / "project")
    (target / "keep.txt").write_text("mine")
    record = tmp_path / "record.json"
    backend = await checked_backend(tmp_path, environ, target_dir=str(target))
    params = make_params(
        prompt="git config --global user.name X", env={"OZ_STANDIN_RECORD": str(record)}
    )
    assert await run_task(backend, params) is ExecuteResult.COMPLETED
    seen = read_record(record)
    assert seen["cwd"] == str(target)
    gitconfig = seen["env"]["GIT_CONFIG_GLOBAL"]
    assert not gitconfig.startswith(str(target) + os.sep)
    assert not os.path.exists(gitconfig)  # removed at teardown
    assert not os.path.exists(os.path.dirname(gitconfig))
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert not (home / ".gitconfig").exists()
    assert not (tmp_path / "ws").exists()  # the root is not used in this mode


@on_both_loops
async def test_cleanup_off_keeps_the_workspace_and_aclose_leaves_it(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    backend = make_backend(tmp_path, environ, cleanup=False)
    assert await run_task(backend, make_params(prompt="echo hi")) is ExecuteResult.COMPLETED
    workspace = tmp_path / "ws" / "run-1"
    assert (workspace / ".gitconfig").is_file()
    assert (workspace / ENV_FILE_NAME).is_file()
    await backend.aclose()
    assert workspace.is_dir()


@on_both_loops
async def test_a_follow_up_execution_reuses_the_runs_workspace_with_cleanup_off(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    backend = make_backend(
        tmp_path, environ, cleanup=False, setup_command='echo "$EXECUTION" >> notes.txt'
    )
    workspace = tmp_path / "ws" / "run-1"
    assert await run_task(backend, make_params(env={"EXECUTION": "1"})) is ExecuteResult.COMPLETED
    assert (workspace / "notes.txt").read_text() == "1\n"

    record = tmp_path / "record.json"
    follow_up = make_params(env={"EXECUTION": "2", "OZ_STANDIN_RECORD": str(record)})
    assert await run_task(backend, follow_up) is ExecuteResult.COMPLETED
    assert read_record(record)["cwd"] == os.path.realpath(workspace)
    assert (workspace / "notes.txt").read_text() == "1\n2\n"


@on_both_loops
async def test_an_existing_workspace_in_an_ozw_root_is_reused_then_removed(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    await make_backend(tmp_path, environ).check()
    assert (tmp_path / "ws" / ROOT_MARKER).exists()
    leftover = tmp_path / "ws" / "run-1"
    leftover.mkdir()
    (leftover / "stale").write_text("old")
    (leftover / ENV_FILE_NAME).write_text("FROM_LAST_TIME=1\n")
    record = tmp_path / "record.json"
    backend = make_backend(tmp_path, environ, setup_command="test -f stale")
    params = make_params(env={"OZ_STANDIN_RECORD": str(record)})
    assert await run_task(backend, params) is ExecuteResult.COMPLETED
    seen = read_record(record)
    assert seen["cwd"] == os.path.realpath(leftover)
    assert "FROM_LAST_TIME" not in seen["env"]  # the environment file starts afresh
    assert not leftover.exists()


@on_both_loops
async def test_a_go_workers_workspace_is_reused_and_never_deleted(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    # A root without ozw's marker (a Go worker's, or the operator's own directory).
    root = tmp_path / "ws"
    existing = root / "run-1"
    existing.mkdir(parents=True)
    (existing / "data.txt").write_text("the run's")
    backend = await checked_backend(tmp_path, environ, setup_command="test -f data.txt")
    assert not (root / ROOT_MARKER).exists()  # non-empty: not marked as ozw's
    record = tmp_path / "record.json"
    params = make_params(env={"OZ_STANDIN_RECORD": str(record)})
    assert await run_task(backend, params) is ExecuteResult.COMPLETED
    assert read_record(record)["cwd"] == os.path.realpath(existing)
    assert (existing / "data.txt").read_text() == "the run's"
    # A new task id in the same root gets its own workspace, removed afterwards.
    fresh = make_backend(tmp_path, environ)
    assert await run_task(fresh, make_params("fresh")) is ExecuteResult.COMPLETED
    assert sorted(p.name for p in root.iterdir()) == ["run-1"]


@on_both_loops
async def test_a_file_or_symlink_at_the_workspace_name_is_refused(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    root = made_dir(tmp_path / "ws")
    (root / "file").write_text("x")
    (root / "link").symlink_to(tmp_path)
    backend = make_backend(tmp_path, environ)
    for task_id in ("file", "link"):
        result = failure(await run_task(backend, make_params(task_id)))
        assert result.reason is FailureReason.WORKSPACE_SETUP
        assert result.cause.endswith("already exists and is not a workspace directory")
    assert (root / "file").read_text() == "x"
    assert (root / "link").is_symlink()


@on_both_loops
async def test_task_id_at_the_name_limit_works_in_both_modes(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    target = made_dir(tmp_path / "project")
    task_id = "t" * os.pathconf(tmp_path, "PC_NAME_MAX")
    record = tmp_path / "record.json"
    params = make_params(task_id, env={"OZ_STANDIN_RECORD": str(record)})
    configs: list[dict[str, Any]] = [{}, {"target_dir": str(target)}]
    for config in configs:
        backend = make_backend(tmp_path, environ, **config)
        assert await run_task(backend, params) is ExecuteResult.COMPLETED, config
        seen = read_record(record)
        assert not os.path.exists(os.path.dirname(seen["env"]["GIT_CONFIG_GLOBAL"]))
    assert list(target.iterdir()) == []


@on_both_loops
async def test_standin_record_is_private(tmp_path: Path, environ: dict[str, str]) -> None:
    record = tmp_path / "record.json"
    backend = make_backend(tmp_path, environ)
    old = os.umask(0o022)
    try:
        params = make_params(env={"OZ_STANDIN_RECORD": str(record)})
        assert await run_task(backend, params) is ExecuteResult.COMPLETED
    finally:
        os.umask(old)
    assert record.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("record.json.")] == []


@on_both_loops
async def test_same_task_twice_at_once_is_refused(tmp_path: Path, environ: dict[str, str]) -> None:
    backend = make_backend(tmp_path, environ)
    first = backend.open_task(make_params(), TaskLog("run-1"))
    await first.setup()
    result = failure(await run_task(backend, make_params()))
    assert result.reason is FailureReason.WORKSPACE_SETUP
    assert (tmp_path / "ws" / "run-1" / ".gitconfig").is_file()  # the first is untouched
    await first.teardown()
    assert not (tmp_path / "ws" / "run-1").exists()


@on_both_loops
async def test_aclose_removes_lingering_workspaces_and_crash_leftovers(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    backend = await checked_backend(tmp_path, environ)
    root = tmp_path / "ws"
    crashed = root / "crashed-run"
    crashed.mkdir()
    (crashed / "file").write_text("x")
    busy = root / "other-worker-run"
    busy.mkdir()
    busy_fd = os.open(busy, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(busy_fd, fcntl.LOCK_EX)  # as another live worker would hold it
    outside = made_dir(tmp_path / "outside")
    (root / "link").symlink_to(outside)

    run = backend.open_task(make_params(), TaskLog("run-1"))
    await run.setup()  # ... and the worker is stopped before teardown
    assert backend.active_workspaces == {os.path.realpath(root / "run-1")}
    try:
        await backend.aclose()
    finally:
        os.close(busy_fd)
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [ROOT_MARKER, "other-worker-run", "link"]
    )
    assert outside.is_dir()
    assert backend.active_workspaces == frozenset()


@on_both_loops
async def test_aclose_never_sweeps_a_root_ozw_does_not_own(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    root = made_dir(tmp_path / "ws")
    (root / "operator-files").mkdir()
    backend = await checked_backend(tmp_path, environ)
    assert not (root / ROOT_MARKER).exists()
    assert await run_task(backend, make_params()) is ExecuteResult.COMPLETED
    await backend.aclose()
    assert sorted(p.name for p in root.iterdir()) == ["operator-files"]


@on_both_loops
async def test_kill_all_stops_a_running_agent_at_once(
    tmp_path: Path, environ: dict[str, str], lines: Lines
) -> None:
    backend = make_backend(tmp_path, environ, kill_grace=30)
    ready = lines.event("ready")
    result: list[ExecuteResult | TaskFailure] = []

    async def run() -> None:
        result.append(
            await run_task(backend, make_params(prompt="ignore sigterm; echo ready; sleep 100"))
        )

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(run)
        with anyio.fail_after(10):
            await ready.wait()
            await backend.kill_all()
    assert failure(result[0]).exit_code == 137


@on_both_loops
async def test_with_target_dir_a_dead_runs_private_directories_are_swept_at_start_up(
    tmp_path: Path, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    system_tmp = made_dir(tmp_path / "system-tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    target = made_dir(tmp_path / "project")
    live = make_backend(tmp_path, environ, target_dir=str(target))
    await live.recover()
    run = live.open_task(make_params("live"), TaskLog("live"))
    await run.setup()
    assert run.workspace is not None
    private = Path(run.workspace.private_dir)
    state = system_tmp / f"ozw-direct-{os.getuid()}"
    assert private.parent == state
    # What a killed worker left: a private directory (environment file and all).
    dead = state / "ozw-crashed-0a1b2c3d"
    dead.mkdir()
    (dead / ENV_FILE_NAME).write_text("SECRET_FROM_SETUP=1\n")

    restarted = make_backend(tmp_path, environ, target_dir=str(target))
    await restarted.recover()
    assert not dead.exists()
    assert private.is_dir()  # locked by a live task: left alone
    await run.teardown()
    assert not private.exists()
    await live.aclose()
    await restarted.aclose()
    assert sorted(p.name for p in state.iterdir()) == []
    assert list(target.iterdir()) == []
