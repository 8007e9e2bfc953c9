"""The shared execution layer: environment rules, script runs, time limits."""

from __future__ import annotations

import ast
import logging
import os
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import ozw.backends
from ozw.backends.base import ProcessBackend
from ozw.backends.execution import (
    ProcessRunner,
    ScriptResult,
    bounded,
    cleanup_bound,
    environment_problem,
    group_alive,
    inherited_environment,
    layered_environment,
    require_valid_environment,
    run_script,
)
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.telemetry.logs import TaskLog
from tests.support.event_loops import on_both_loops

# ------------------------------------------------------------------ environment


def test_layers_apply_in_protocol_order() -> None:
    layers = {
        "inherited": {"A": "inherited", "B": "inherited", "C": "inherited"},
        "task": {"B": "task", "C": "task", "D": "task"},
        "configured": {"C": "configured", "D": "configured", "E": "configured"},
        "overrides": {"D": "overrides", "E": "overrides", "F": "overrides"},
        "forced": {"E": "forced", "F": "forced"},
    }
    assert layered_environment(**layers) == {
        "A": "inherited",
        "B": "task",
        "C": "configured",
        "D": "overrides",
        "E": "forced",
        "F": "forced",
    }
    assert layered_environment(task={"X": "1"}) == {"X": "1"}


def test_no_child_inherits_the_api_key() -> None:
    worker = {"WARP_API_KEY": "secret", "PATH": "/bin", "HOME": "/h"}
    assert inherited_environment(worker) == {"PATH": "/bin", "HOME": "/h"}
    # Opting in is a configured entry, which is a later layer.
    opted_in = layered_environment(
        inherited=inherited_environment(worker), configured={"WARP_API_KEY": "secret"}
    )
    assert opted_in["WARP_API_KEY"] == "secret"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"OK": "v"}, None),
        ({"OK": "v", "": "x"}, "invalid environment variable name ''"),
        ({"A=B": "x"}, "invalid environment variable name 'A=B'"),
        ({"N\0": "x"}, "invalid environment variable name 'N\\x00'"),
        ({"NUL": "a\0b"}, "environment variable NUL holds a NUL byte"),
        ({"MULTI": "line\nbreak = and spaces", "BIG": "x" * 100_000}, None),
    ],
)
def test_environment_problem_names_the_variable(env: dict[str, str], problem: str | None) -> None:
    assert environment_problem(env) == problem


def test_an_invalid_variable_fails_the_task_with_the_callers_reason() -> None:
    require_valid_environment({"A": "1"}, FailureReason.SETUP_COMMAND, "the setup command")
    with pytest.raises(TaskFailure) as caught:
        require_valid_environment(
            {"SECRET": "val\0ue"}, FailureReason.SETUP_COMMAND, "the setup command"
        )
    assert caught.value.reason is FailureReason.SETUP_COMMAND
    assert caught.value.cause == (
        "cannot start the setup command: environment variable SECRET holds a NUL byte"
    )
    assert "val" not in caught.value.cause


# ---------------------------------------------------------------------- scripts


async def script(command: str, **kwargs: object) -> ScriptResult:
    options: dict[str, object] = {"timeout": 30.0, "env": {"PATH": os.defpath}}
    options.update(kwargs)
    runner = options.pop("runner", ProcessRunner(kill_grace=5))
    assert isinstance(runner, ProcessRunner)
    return await run_script(
        runner,
        command,
        what="test script",
        label="test",
        log=TaskLog("t-1"),
        **options,  # type: ignore[arg-type]
    )


@on_both_loops
async def test_a_script_that_exits_0_is_ok() -> None:
    result = await script("exit 0")
    assert result.ok
    assert result.exit_code == 0
    assert result.describe() == "test script exited with exit code 0"


@on_both_loops
async def test_a_failed_script_keeps_its_code_and_stderr_tail() -> None:
    result = await script("echo one >&2; echo two >&2; echo three >&2; exit 3", stderr_lines=2)
    assert not result.ok
    assert result.exit_code == 3
    assert result.stderr_tail == ("two", "three")
    assert result.describe() == "test script exited with exit code 3"
    failure = result.failure(FailureReason.SETUP_COMMAND)
    assert failure.reason is FailureReason.SETUP_COMMAND
    assert failure.exit_code is None  # only the agent's own exit carries one


@on_both_loops
async def test_a_script_gets_its_environment_cwd_and_stdin(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = await script(
        f'printf "%s %s " "$X" "$(pwd)" > {out}; cat >> {out}',
        env={"PATH": os.defpath, "X": "value"},
        cwd=tmp_path,
        stdin=b"payload",
    )
    assert result.ok
    assert out.read_text() == f"value {tmp_path} payload"


@on_both_loops
async def test_a_script_past_its_timeout_has_its_group_stopped(tmp_path: Path) -> None:
    pgid_file = tmp_path / "pgid"
    runner = ProcessRunner(kill_grace=0.5)
    # The grandchild ignores SIGTERM: only the group-wide SIGKILL ends it.
    result = await script(
        f"echo $$ > {pgid_file}; sh -c 'trap \"\" TERM; sleep 60' & wait",
        runner=runner,
        timeout=0.5,
    )
    assert result.timed_out
    assert result.exit_code is None
    assert result.describe() == "test script timed out after 0.5s"
    assert result.failure(FailureReason.DISPATCH_TIMEOUT).reason is FailureReason.DISPATCH_TIMEOUT
    assert not runner.live_groups
    assert not group_alive(int(pgid_file.read_text()))


@on_both_loops
async def test_a_script_that_cannot_start_says_why(tmp_path: Path) -> None:
    result = await script("true", cwd=tmp_path / "missing")
    assert not result.ok
    assert result.start_error is not None
    assert result.describe().startswith("test script could not start: ")


@on_both_loops
async def test_cancelling_the_caller_stops_the_script_and_propagates() -> None:
    runner = ProcessRunner(kill_grace=0.5)
    started = anyio.Event()

    async def watch() -> None:
        while not runner.live_groups:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        started.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(watch)
            nursery.start_soon(lambda: script("sleep 60", runner=runner))
            await started.wait()
            (pgid,) = runner.live_groups
            scope.cancel()
    assert scope.cancelled_caught
    assert not runner.live_groups
    assert not group_alive(pgid)


# ------------------------------------------------------------------------ limits


@on_both_loops
async def test_bounded_fails_the_task_with_the_phase_reason() -> None:
    limit = bounded(0.05, FailureReason.IMAGE_PULL, "pulling x: the docker CLI", hint="hung?")
    with pytest.raises(TaskFailure) as caught, limit:
        await anyio.sleep(10)
    assert caught.value.reason is FailureReason.IMAGE_PULL
    assert caught.value.cause == "pulling x: the docker CLI did not finish within 0.05s (hung?)"


@on_both_loops
async def test_bounded_lets_a_quick_call_through() -> None:
    with bounded(10, FailureReason.IMAGE_PULL, "quick"):
        await anyio.lowlevel.checkpoint()


@on_both_loops
async def test_cleanup_bound_runs_inside_a_cancelled_scope_and_gives_up() -> None:
    reached = False
    with anyio.CancelScope() as outer:
        outer.cancel()
        with cleanup_bound(0.05) as bound:
            await anyio.lowlevel.checkpoint()  # not cancelled: shielded
            reached = True
            await anyio.sleep(10)  # cut by the bound
    assert reached
    assert bound.cancelled_caught


# ------------------------------------------------------------------------- base


@on_both_loops
async def test_a_process_backend_kills_every_group_it_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Idle(ProcessBackend):
        name = "idle"

        def open_task(self, params: object, log: object) -> object:  # type: ignore[override]
            raise NotImplementedError

    backend = Idle(kill_grace=30, environ={"WARP_API_KEY": "k", "PATH": os.defpath})
    assert backend.environ == {"WARP_API_KEY": "k", "PATH": os.defpath}
    caplog.set_level(logging.INFO)
    codes: list[int] = []

    async def run() -> None:
        codes.append(await backend.runner.run(["sleep", "60"], log=TaskLog("t"), label="x", env={}))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(run)
            while not backend.runner.live_groups:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            await backend.kill_all()
    assert codes == [137]


def test_no_backend_module_imports_trio() -> None:
    """Backends are anyio-only: their contract tests run under Trio and asyncio."""
    root = Path(ozw.backends.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [
                f"{path.relative_to(root)}: {name}"
                for name in names
                if name == "trio" or name.startswith(("trio.", "trio_"))
            ]
    assert offenders == []
