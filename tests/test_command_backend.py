"""The command backend: pure rules, real dispatch/cancel commands, and end to end.

The end-to-end tests run a real WebSocket dispatch server and an in-process Worker;
two of them use the example scripts in ``examples/command-backend`` with the stand-in
agent ``examples/agent/oz``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio

from ozw.backends.base import ExecuteResult, TaskRun
from ozw.backends.command.backend import CommandBackend
from ozw.backends.command.rules import (
    GO_ZERO_TIME,
    cancel_variables,
    command_environment,
    dispatch_failure_cause,
    dispatch_payload,
    dispatch_variables,
    encode_payload,
    last_line,
    payload_task,
)
from ozw.backends.command.task import STDERR_TAIL_LINES
from ozw.backends.execution import ScriptResult, configured_environment, group_alive
from ozw.config import CommandConfig, EnvEntry
from ozw.tasks.failures import BackendUnavailable, FailureReason, TaskFailure
from ozw.tasks.lifecycle import TaskOutcome
from ozw.tasks.params import ParamSettings, TaskParams, build_task_params
from ozw.telemetry.logs import TaskLog
from ozw.wire.codec import (
    SidecarSpec,
    Task,
    TaskAssignment,
    TaskCancellation,
    TaskClaimed,
    TaskFailed,
)
from tests.support.event_loops import on_both_loops
from tests.support.log_lines import Lines
from tests.support.ozw_process import REPO, STANDIN_AGENT
from tests.support.procs import environ_of as proc_environ
from tests.support.procs import processes_carrying
from tests.support.worker import running_worker, start_server, start_worker, terminal_for

EXAMPLES = REPO / "examples" / "command-backend"
SECRET = "s3cr3t-9f8e7d6c5b4a"
WORKER_KEY = "wk-worker-credential-123"
ROOT_URL = "http://oz.example.test"
PAYLOAD_KEYS = [
    "version",
    "run_id",
    "execution_id",
    "server_root_url",
    "worker_id",
    "docker_image",
    "base_args",
    "env",
    "sidecars",
    "task",
]


# --------------------------------------------------------------------------- helpers


def make_params(
    task_id: str = "run-1",
    *,
    execution_id: str | None = "exec-1",
    env_vars: dict[str, str] | None = None,
    **extra: Any,
) -> TaskParams:
    assignment = TaskAssignment(
        task_id,
        Task(id=task_id, title="Fix the flaky test"),
        execution_id=execution_id,
        env_vars={"GITHUB_ACCESS_TOKEN": SECRET} if env_vars is None else env_vars,
        **extra,
    )
    return build_task_params(assignment, ParamSettings(server_root_url=ROOT_URL))


class Recorder(logging.Handler):
    """Keeps log records; sets ``events[text]`` when a line equal to ``text`` is logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.events: collections.defaultdict[str, anyio.Event] = collections.defaultdict(
            anyio.Event
        )

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        message = record.getMessage()
        if message in self.events:
            self.events[message].set()

    def lines(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


def cancel_failures(log: Lines | Recorder) -> list[str]:
    """The warnings of cancel commands that failed, timed out or could not start."""
    return [
        r.getMessage()
        for r in log.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("cancel command")
    ]


def recording_log(task_id: str, level: int = logging.DEBUG) -> tuple[TaskLog, Recorder]:
    recorder = Recorder()
    logger = logging.Logger(f"test.command.{task_id}", level)
    logger.addHandler(recorder)
    return TaskLog(task_id, logger), recorder


def worker_environ(**extra: str) -> dict[str, str]:
    """A small worker environment: enough to run sh and python, plus the worker's key."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env["WARP_API_KEY"] = WORKER_KEY
    env.update(extra)
    return env


def backend_for(
    dispatch: str,
    *,
    cancel: str | None = None,
    environment: tuple[EnvEntry, ...] = (),
    timeout: float = 10.0,
    kill_grace: float = 1.0,
    environ: dict[str, str] | None = None,
) -> CommandBackend:
    config = CommandConfig(
        dispatch_command=dispatch,
        cancel_command=cancel,
        dispatch_timeout=timeout,
        environment=environment,
        kill_grace=kill_grace,
    )
    return CommandBackend(
        config, worker_id="w1", environ=worker_environ() if environ is None else environ
    )


def quote(path: Path) -> str:
    return shlex.quote(str(path))


async def poll_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Bounded poll, only for files written by detached processes (no event exists)."""
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)


def kill_groups(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


class ObservedBackend(CommandBackend):
    """A CommandBackend that tells the test when a cancel has finished."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cancelled: collections.defaultdict[str, anyio.Event] = collections.defaultdict(
            anyio.Event
        )

    async def cancel(self, params: TaskParams) -> None:
        try:
            await super().cancel(params)
        finally:
            self.cancelled[params.task_id].set()


def finished_events(
    outcomes: dict[str, TaskOutcome],
) -> tuple[
    collections.defaultdict[str, anyio.Event], Callable[[TaskParams, TaskOutcome, float], None]
]:
    events: collections.defaultdict[str, anyio.Event] = collections.defaultdict(anyio.Event)

    def hook(params: TaskParams, outcome: TaskOutcome, duration: float) -> None:
        outcomes[params.task_id] = outcome
        events[params.task_id].set()

    return events, hook


# ----------------------------------------------------------------------- pure rules


def test_payload_has_exactly_the_documented_fields_in_order() -> None:
    params = make_params(
        docker_image="debian:12",
        sidecar_image="warpdotdev/warp-agent:latest",
        additional_sidecars=[SidecarSpec("cache:1", "/mnt/cache", read_write=True)],
        additional_oz_args=["--foo", "bar"],
    )
    payload = dispatch_payload(params, worker_id="w1")
    assert list(payload) == PAYLOAD_KEYS
    assert payload["version"] == 1
    assert payload["run_id"] == "run-1"
    assert payload["execution_id"] == "exec-1"
    assert payload["server_root_url"] == ROOT_URL
    assert payload["worker_id"] == "w1"
    assert payload["docker_image"] == "debian:12"
    assert payload["base_args"] == list(params.base_args)
    assert payload["base_args"][:2] == ["agent", "run"]
    assert payload["env"] == params.env
    assert payload["env"]["GITHUB_ACCESS_TOKEN"] == SECRET
    assert payload["sidecars"] == [
        {"image": "warpdotdev/warp-agent:latest", "mount_path": "/agent", "read_write": False},
        {"image": "cache:1", "mount_path": "/mnt/cache", "read_write": True},
    ]
    assert [list(s) for s in payload["sidecars"]] == [["image", "mount_path", "read_write"]] * 2
    assert payload["task"] == payload_task(params.task, "run-1")
    assert payload["task"]["title"] == "Fix the flaky test"


def test_payload_without_execution_id_has_an_empty_string_like_go() -> None:
    payload = dispatch_payload(make_params(execution_id=None), worker_id="w1")
    assert payload["execution_id"] == ""
    assert payload["sidecars"] == []


def test_encoded_payload_is_one_ascii_json_line() -> None:
    params = make_params(env_vars={"GREETING": "grüß dich \ud800"})
    data = encode_payload(dispatch_payload(params, worker_id="w1"))
    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1
    data.decode("ascii")  # no UnicodeDecodeError: lone surrogates survive as escapes
    decoded = json.loads(data)
    assert list(decoded) == PAYLOAD_KEYS
    assert decoded["env"]["GREETING"] == "grüß dich \ud800"


def test_forced_variables() -> None:
    params = make_params(docker_image="debian:12")
    assert dispatch_variables(params) == {
        "OZ_RUN_ID": "run-1",
        "OZ_EXECUTION_ID": "exec-1",
        "OZ_WORKER_BACKEND": "command",
        "OZ_SERVER_ROOT_URL": ROOT_URL,
        "OZ_DOCKER_IMAGE": "debian:12",
    }
    assert cancel_variables(make_params(execution_id=None)) == {
        "OZ_RUN_ID": "run-1",
        "OZ_EXECUTION_ID": "",
        "OZ_WORKER_BACKEND": "command",
    }


def test_command_environment_layers() -> None:
    worker = {"PATH": "/bin", "WARP_API_KEY": WORKER_KEY, "OZ_RUN_ID": "worker", "KEEP": "k"}
    configured = (
        EnvEntry("OZ_RUN_ID", "configured"),
        EnvEntry("OZ_WORKER_BACKEND", "configured"),
        EnvEntry("FOO", "bar"),
        EnvEntry("KEEP"),  # inherits
        EnvEntry("ABSENT"),  # inherits nothing: skipped
        EnvEntry("PATH", "/opt/bin"),
    )
    env = command_environment(
        worker=worker,
        configured=configured,
        forced={"OZ_RUN_ID": "run-1", "OZ_WORKER_BACKEND": "command"},
    )
    assert env == {
        "PATH": "/opt/bin",
        "OZ_RUN_ID": "run-1",
        "OZ_WORKER_BACKEND": "command",
        "KEEP": "k",
        "FOO": "bar",
    }


def test_worker_key_passes_only_when_configured_explicitly() -> None:
    worker = {"WARP_API_KEY": WORKER_KEY}
    assert command_environment(worker=worker, configured=(), forced={}) == {}
    explicit = command_environment(worker=worker, configured=(EnvEntry("WARP_API_KEY"),), forced={})
    assert explicit == {"WARP_API_KEY": WORKER_KEY}


def test_configured_environment_inherits() -> None:
    entries = (EnvEntry("A", "1"), EnvEntry("B"), EnvEntry("C"))
    assert configured_environment(entries, {"B": "2"}) == {"A": "1", "B": "2"}


def test_failure_cause_quotes_the_last_stderr_line() -> None:
    def exited(code: int, tail: tuple[str, ...]) -> ScriptResult:
        return ScriptResult("dispatch command", exit_code=code, stderr_tail=tail)

    assert dispatch_failure_cause(exited(3, ("first", "no capacity", "  ", ""))) == (
        "dispatch command exited with exit code 3: no capacity"
    )
    assert dispatch_failure_cause(exited(3, ())) == "dispatch command exited with exit code 3"
    assert dispatch_failure_cause(exited(137, ("x",))) == (
        "dispatch command exited with killed by SIGKILL (exit code 137): x"
    )
    long = last_line(["y" * 1000])
    assert long is not None
    assert len(long) == 300
    assert long.endswith("...")


# ------------------------------------------------------------ real dispatch commands

RECORD_SCRIPT = (
    'cat > "$OUT/stdin.json"; env > "$OUT/env.txt"; '
    'cat /proc/$$/environ > "$OUT/environ"; cat /proc/$$/cmdline > "$OUT/cmdline"; '
    "echo accepted"
)


@on_both_loops
async def test_dispatch_hands_off_with_the_payload_on_stdin_and_no_secret_elsewhere(
    tmp_path: Path,
) -> None:
    environ = worker_environ(
        OZ_RUN_ID="from-worker",
        OZ_SERVER_ROOT_URL="from-worker",
        INHERITED="from-worker",
        GITHUB_TOKEN_NAME_ONLY="x",
    )
    environment = (
        EnvEntry("OUT", str(tmp_path)),
        EnvEntry("OZ_EXECUTION_ID", "from-config"),
        EnvEntry("OZ_DOCKER_IMAGE", "from-config"),
        EnvEntry("OZ_WORKER_BACKEND", "from-config"),
        EnvEntry("INHERITED"),
        EnvEntry("OPERATOR_SETTING", "on"),
    )
    backend = backend_for(RECORD_SCRIPT, environment=environment, environ=environ)
    params = make_params(
        docker_image="debian:12",
        env_vars={"GITHUB_ACCESS_TOKEN": SECRET, "OZ_RUN_ID": "from-task"},
        sidecar_image="warpdotdev/warp-agent:latest",
    )
    log, recorder = recording_log(params.task_id)
    run = backend.open_task(params, log)
    with anyio.fail_after(10):
        await run.setup()
        assert await run.execute() is ExecuteResult.HANDED_OFF
        await run.teardown()
    assert "accepted" in recorder.lines(logging.INFO)

    stdin = (tmp_path / "stdin.json").read_bytes()
    assert stdin == encode_payload(dispatch_payload(params, worker_id="w1"))
    payload = json.loads(stdin)
    assert list(payload) == PAYLOAD_KEYS
    assert payload["env"]["GITHUB_ACCESS_TOKEN"] == SECRET

    environ_raw = (tmp_path / "environ").read_bytes()
    cmdline_raw = (tmp_path / "cmdline").read_bytes()
    env_txt = (tmp_path / "env.txt").read_text()
    for blob in (environ_raw, cmdline_raw, env_txt.encode()):
        assert SECRET.encode() not in blob
        assert WORKER_KEY.encode() not in blob
    assert cmdline_raw.split(b"\0")[:2] == [b"/bin/sh", b"-c"]

    env = proc_environ(environ_raw)
    assert env["OZ_RUN_ID"] == "run-1"
    assert env["OZ_EXECUTION_ID"] == "exec-1"
    assert env["OZ_WORKER_BACKEND"] == "command"
    assert env["OZ_SERVER_ROOT_URL"] == ROOT_URL
    assert env["OZ_DOCKER_IMAGE"] == "debian:12"
    assert "WARP_API_KEY" not in env
    assert "GITHUB_ACCESS_TOKEN" not in env
    assert env["INHERITED"] == "from-worker"
    assert env["OPERATOR_SETTING"] == "on"
    assert env["GITHUB_TOKEN_NAME_ONLY"] == "x"  # the rest of the worker's environment


@on_both_loops
async def test_nonzero_exit_is_dispatch_command_with_the_stderr_tail(tmp_path: Path) -> None:
    script = 'for i in $(seq 1 25); do echo "err $i" >&2; done; echo partial; exit 3'
    backend = backend_for(script)
    log, recorder = recording_log("run-1", logging.WARNING)
    run = backend.open_task(make_params(), log)
    with anyio.fail_after(10), pytest.raises(TaskFailure) as caught:
        await run.execute()
    failure = caught.value
    assert failure.reason is FailureReason.DISPATCH_COMMAND
    assert failure.exit_code is None  # exit_code is the agent's own exit only
    assert failure.cause == "dispatch command exited with exit code 3: err 25"
    assert (
        failure.message
        == "Failed to execute task: dispatch command exited with exit code 3: err 25"
    )
    warnings = recorder.lines(logging.WARNING)
    assert warnings[0] == "dispatch command exited with exit code 3; its last 20 stderr line(s):"
    assert warnings[1:] == [f"err {i}" for i in range(26 - STDERR_TAIL_LINES, 26)]


@on_both_loops
async def test_the_stderr_tail_is_not_repeated_where_it_was_relayed_live() -> None:
    backend = backend_for('echo "err 1" >&2; exit 3')
    log, recorder = recording_log("run-1", logging.INFO)
    with anyio.fail_after(10), pytest.raises(TaskFailure):
        await backend.open_task(make_params(), log).execute()
    assert recorder.lines(logging.INFO).count("err 1") == 1
    assert recorder.lines(logging.WARNING) == []


@on_both_loops
async def test_missing_dispatch_script_is_exit_127(tmp_path: Path) -> None:
    backend = backend_for(quote(tmp_path / "no-such-dispatch.sh"))
    log, _ = recording_log("run-1")
    with anyio.fail_after(10), pytest.raises(TaskFailure) as caught:
        await backend.open_task(make_params(), log).execute()
    assert caught.value.reason is FailureReason.DISPATCH_COMMAND
    assert "exit code 127" in caught.value.cause
    assert "not found" in caught.value.cause


@on_both_loops
async def test_dispatch_killed_by_a_signal_reports_128_plus_n() -> None:
    backend = backend_for("kill -KILL $$")
    log, _ = recording_log("run-1")
    with anyio.fail_after(10), pytest.raises(TaskFailure) as caught:
        await backend.open_task(make_params(), log).execute()
    assert "killed by SIGKILL (exit code 137)" in caught.value.cause
    assert caught.value.reason is FailureReason.DISPATCH_COMMAND


@on_both_loops
async def test_dispatch_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    # The shell and its child ignore SIGTERM: only the SIGKILL after kill_grace stops them.
    script = "trap '' TERM; echo $$ > \"$OUT/pgid\"; sleep 60 & wait"
    backend = backend_for(
        script, environment=(EnvEntry("OUT", str(tmp_path)),), timeout=0.5, kill_grace=0.3
    )
    log, _ = recording_log("run-1")
    with anyio.fail_after(10), pytest.raises(TaskFailure) as caught:
        await backend.open_task(make_params(), log).execute()
    assert caught.value.reason is FailureReason.DISPATCH_TIMEOUT
    assert caught.value.cause == "dispatch command timed out after 0.5s"
    assert caught.value.exit_code is None
    pgid = int((tmp_path / "pgid").read_text())
    assert not group_alive(pgid)
    assert not backend.runner.live_groups


# The dispatch "submits" the work, then hangs: only the cancel command can stop it now.
SUBMIT_THEN_HANG = 'echo submitted >> "$OUT/order"; echo ready; sleep 60'
CANCEL_ORDER = 'echo "cancel $OZ_RUN_ID" >> "$OUT/order"'


@on_both_loops
async def test_dispatch_timeout_runs_the_cancel_command(tmp_path: Path) -> None:
    backend = backend_for(
        SUBMIT_THEN_HANG,
        cancel=CANCEL_ORDER,
        environment=(EnvEntry("OUT", str(tmp_path)),),
        timeout=0.5,
        kill_grace=0.3,
    )
    log, recorder = recording_log("run-1")
    with anyio.fail_after(10), pytest.raises(TaskFailure) as caught:
        await backend.open_task(make_params(), log).execute()
    assert caught.value.reason is FailureReason.DISPATCH_TIMEOUT
    assert (tmp_path / "order").read_text().split("\n") == ["submitted", "cancel run-1", ""]
    assert len(cancel_failures(recorder)) == 0
    assert not backend.runner.live_groups

    failing = backend_for(
        SUBMIT_THEN_HANG,
        cancel="exit 4",
        environment=(EnvEntry("OUT", str(tmp_path)),),
        timeout=0.5,
        kill_grace=0.3,
    )
    with anyio.fail_after(10), pytest.raises(TaskFailure) as caught:
        await failing.open_task(make_params(), log).execute()
    assert caught.value.reason is FailureReason.DISPATCH_TIMEOUT
    assert len(cancel_failures(recorder)) == 1


@on_both_loops
async def test_a_dispatch_stopped_by_the_worker_runs_the_cancel_command(
    tmp_path: Path, lines: Lines
) -> None:
    # task_timeout or a forced stop: the task's scope is cancelled, backend.cancel is not
    # called. (A server cancellation calls both: test_cancel_waits_for_an_in_flight_dispatch
    # shows the cancel command then runs once.)
    backend = backend_for(
        SUBMIT_THEN_HANG, cancel=CANCEL_ORDER, environment=(EnvEntry("OUT", str(tmp_path)),)
    )
    params = make_params()
    log, recorder = recording_log(params.task_id)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as nursery:
            scope = anyio.CancelScope()

            async def execute() -> None:
                with scope:
                    await backend.open_task(params, log).execute()

            nursery.start_soon(execute)
            await recorder.events["ready"].wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert (tmp_path / "order").read_text().split("\n") == ["submitted", "cancel run-1", ""]
    assert cancel_failures(recorder) == cancel_failures(lines) == []


@on_both_loops
async def test_a_dispatch_killed_by_kill_all_runs_the_cancel_command(tmp_path: Path) -> None:
    backend = backend_for(
        SUBMIT_THEN_HANG, cancel=CANCEL_ORDER, environment=(EnvEntry("OUT", str(tmp_path)),)
    )
    log, recorder = recording_log("run-1")
    failures: list[TaskFailure] = []

    async def execute() -> None:
        try:
            await backend.open_task(make_params(), log).execute()
        except TaskFailure as exc:
            failures.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(execute)
            await recorder.events["ready"].wait()
            await backend.kill_all()
    assert ["exit code 137" in f.cause for f in failures] == [True]
    assert (tmp_path / "order").read_text().split("\n") == ["submitted", "cancel run-1", ""]


async def cancelled_once_ready(
    run: TaskRun, ready: anyio.Event, also: Callable[[], Awaitable[object]] | None = None
) -> bool:
    """Execute ``run`` and cancel its scope once ``ready`` is set (then await ``also``);
    whether the scope caught the cancellation."""
    scope = anyio.CancelScope()

    async def execute() -> None:
        with scope:
            await run.execute()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(execute)
            await ready.wait()
            scope.cancel()
            if also is not None:
                await also()
    return scope.cancelled_caught


@on_both_loops
async def test_cancelling_the_task_scope_stops_the_dispatch_command(tmp_path: Path) -> None:
    script = 'echo $$ > "$OUT/pgid"; echo ready; sleep 60'
    backend = backend_for(script, environment=(EnvEntry("OUT", str(tmp_path)),))
    log, recorder = recording_log("run-1")
    ready = recorder.events["ready"]
    assert await cancelled_once_ready(backend.open_task(make_params(), log), ready)
    assert not group_alive(int((tmp_path / "pgid").read_text()))


@on_both_loops
async def test_check() -> None:
    await backend_for("true").check()
    with pytest.raises(BackendUnavailable, match="dispatch_command is empty"):
        await backend_for("   ").check()
    assert CommandBackend.tasks_survive_shutdown is True
    assert CommandBackend.name == "command"


# -------------------------------------------------------------- real cancel commands

CANCEL_RECORD = 'cat /proc/$$/environ > "$OUT/cancel-environ"; echo cancelled'


@on_both_loops
async def test_cancel_command_gets_the_run_variables(tmp_path: Path, lines: Lines) -> None:
    backend = backend_for(
        "true",
        cancel=CANCEL_RECORD,
        environment=(EnvEntry("OUT", str(tmp_path)), EnvEntry("OZ_RUN_ID", "from-config")),
        environ=worker_environ(OZ_EXECUTION_ID="from-worker"),
    )
    await backend.cancel(make_params("run-7", execution_id=None))
    env = proc_environ((tmp_path / "cancel-environ").read_bytes())
    assert env["OZ_RUN_ID"] == "run-7"
    assert env["OZ_EXECUTION_ID"] == ""
    assert env["OZ_WORKER_BACKEND"] == "command"
    assert "WARP_API_KEY" not in env
    assert "GITHUB_ACCESS_TOKEN" not in env
    assert SECRET not in (tmp_path / "cancel-environ").read_text()
    assert len(cancel_failures(lines)) == 0


@on_both_loops
async def test_cancel_failures_are_logged_never_raised(tmp_path: Path, lines: Lines) -> None:
    failing = backend_for("true", cancel="echo gone wrong >&2; exit 5")
    await failing.cancel(make_params())
    assert cancel_failures(lines) == ["cancel command exited with exit code 5"]

    slow = backend_for("true", cancel="sleep 60", timeout=0.3, kill_grace=0.3)
    with anyio.fail_after(10):
        await slow.cancel(make_params())
    assert cancel_failures(lines)[1:] == ["cancel command timed out after 0.3s"]
    assert not slow.runner.live_groups

    unset = backend_for("true")
    await unset.cancel(make_params())
    assert len(cancel_failures(lines)) == 2


@on_both_loops
async def test_cancel_waits_for_an_in_flight_dispatch(tmp_path: Path, lines: Lines) -> None:
    # The dispatch command takes a moment to stop; the cancel command must come after it.
    # "ready" comes once the background sleeper and the trap exist, so the SIGTERM
    # cannot arrive in between and leave a sleeper for the SIGKILL after kill_grace.
    dispatch = (
        "sleep 60 & child=$!; "
        "trap 'kill $child; sleep 0.3; echo dispatch-ended >> \"$OUT/order\"; exit 143' TERM; "
        "echo ready; wait"
    )
    backend = backend_for(
        dispatch,
        cancel='echo cancel >> "$OUT/order"',
        environment=(EnvEntry("OUT", str(tmp_path)),),
        kill_grace=5.0,
    )
    params = make_params()
    log, recorder = recording_log(params.task_id)
    ready = recorder.events["ready"]
    run = backend.open_task(params, log)
    # The supervisor cancels the task's scope and the backend together.
    assert await cancelled_once_ready(run, ready, lambda: backend.cancel(params))
    assert (tmp_path / "order").read_text().split() == ["dispatch-ended", "cancel"]
    assert cancel_failures(recorder) == cancel_failures(lines) == []


# ---------------------------------------------------------------- example scripts

DISPATCH_EXAMPLE = quote(EXAMPLES / "dispatch.py")
CANCEL_EXAMPLE = quote(EXAMPLES / "cancel.py")


def example_backend(state: Path, *extra: EnvEntry) -> ObservedBackend:
    config = CommandConfig(
        dispatch_command=DISPATCH_EXAMPLE,
        cancel_command=CANCEL_EXAMPLE,
        dispatch_timeout=20.0,
        environment=(
            EnvEntry("OZ_COMMAND_STATE_DIR", str(state)),
            EnvEntry("OZ_COMMAND_KILL_GRACE", "0.5"),
            *extra,
        ),
    )
    return ObservedBackend(config, worker_id="w1", environ=worker_environ())


@pytest.fixture
def stray_groups() -> Iterator[list[int]]:
    """Process groups a test started detached; SIGKILLed afterwards whatever happened."""
    groups: list[int] = []
    yield groups
    kill_groups(groups)


def test_example_scripts_and_standin_agent_exist() -> None:
    for path in (EXAMPLES / "dispatch.py", EXAMPLES / "cancel.py", STANDIN_AGENT):
        assert os.access(path, os.X_OK), f"{path} must exist and be executable"
    assert (EXAMPLES / "README.md").is_file()


@on_both_loops
async def test_example_dispatch_failure_quotes_its_error(tmp_path: Path) -> None:
    backend = example_backend(tmp_path, EnvEntry("OZ_COMMAND_AGENT", str(tmp_path / "nope")))
    log, _ = recording_log("run-1")
    with anyio.fail_after(20), pytest.raises(TaskFailure) as caught:
        await backend.open_task(make_params(), log).execute()
    assert caught.value.reason is FailureReason.DISPATCH_COMMAND
    assert caught.value.cause == (
        f"dispatch command exited with exit code 1: dispatch: cannot start the agent "
        f"{tmp_path / 'nope'}: No such file or directory"
    )


@on_both_loops
async def test_example_cancel_of_an_unknown_run_succeeds(tmp_path: Path, lines: Lines) -> None:
    backend = example_backend(tmp_path)
    with anyio.fail_after(20):
        await backend.cancel(make_params("never-dispatched"))
    assert len(cancel_failures(lines)) == 0


def example_payload(run_id: str, marker: str, prompt: str = "sleep 600") -> bytes:
    params = make_params(run_id, env_vars={"OZ_STANDIN_PROMPT": prompt, "MARKER": marker})
    return encode_payload(dispatch_payload(params, worker_id="w1"))


async def run_example(
    script: str, state: Path, *, stdin: bytes = b"", run_id: str = "run-1"
) -> subprocess.CompletedProcess[bytes]:
    env = worker_environ(OZ_COMMAND_STATE_DIR=str(state), OZ_RUN_ID=run_id)
    env["OZ_COMMAND_KILL_GRACE"] = "0.2"
    with anyio.fail_after(20):
        return await anyio.run_process(
            [sys.executable, str(EXAMPLES / script)], input=stdin, check=False, env=env
        )


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique environment marker for the agents a test starts; they are SIGKILLed
    afterwards whatever happened (a test of the unfixed scripts leaves them running)."""
    value = f"ozw-test-{os.getpid()}-{id(object())}"
    yield value
    kill_groups(processes_carrying(value))


async def no_process_carries(marker: str) -> bool:
    with anyio.move_on_after(3):
        while processes_carrying(marker):  # noqa: ASYNC110 (no event for a stranger's exit)
            await anyio.sleep(0.02)
    return not processes_carrying(marker)


@on_both_loops
async def test_example_dispatch_stops_an_agent_it_cannot_record(
    tmp_path: Path, marker: str
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "run-1").mkdir(mode=0o700)
    (state / "run-1" / "agent.json").mkdir()  # writing the state fails after the launch
    result = await run_example("dispatch.py", state, stdin=example_payload("run-1", marker))
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines  # one line for ozw's failure message, no traceback
    assert lines[0].startswith(f"dispatch: cannot record the agent in {state}/run-1/agent.json")
    assert lines[0].endswith("the agent was stopped")
    assert await no_process_carries(marker)


@contextlib.asynccontextmanager
async def victim() -> AsyncIterator[anyio.abc.Process]:
    """A process group of ours that a forged agent.json points cancel.py at."""
    process = await anyio.open_process(["sleep", "600"], start_new_session=True)
    try:
        yield process
    finally:
        kill_groups([process.pid])
        with anyio.move_on_after(5, shield=True):
            await process.wait()


def forge_state(directory: Path, pid: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "agent.json").write_text(json.dumps({"pid": pid, "pgid": pid}))


@pytest.mark.parametrize("problem", ["world-writable", "foreign owner", "symlink"])
@on_both_loops
async def test_example_scripts_refuse_a_state_root_others_control(
    tmp_path: Path, marker: str, problem: str
) -> None:
    state = tmp_path / "state"
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    if problem == "symlink":
        state.symlink_to(real)
    else:
        state.mkdir(mode=0o700)
        if problem == "world-writable":
            state.chmod(0o777)
        else:
            os.chown(state, 65534, 65534)  # the tests run as root in CI and here
    async with victim() as target:
        forge_state((real if problem == "symlink" else state) / "run-1", target.pid)
        result = await run_example("cancel.py", state)
        assert result.returncode == 1
        assert b"refusing to trust it" in result.stderr
        assert target.returncode is None
        assert group_alive(target.pid)

    result = await run_example("dispatch.py", state, stdin=example_payload("run-2", marker))
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"dispatch: state directory {state} ")
    assert result.stderr.decode().rstrip().endswith("refusing to use it")
    assert not processes_carrying(marker)
    assert not (real / "run-2").exists()


@on_both_loops
async def test_example_scripts_refuse_symlinked_run_state(tmp_path: Path, marker: str) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state / "run-1").symlink_to(elsewhere)
    (state / "run-2").mkdir(mode=0o700)
    async with victim() as target:
        forge_state(elsewhere, target.pid)
        forge_state(tmp_path / "forged", target.pid)
        (state / "run-2" / "agent.json").symlink_to(tmp_path / "forged" / "agent.json")
        for run_id in ("run-1", "run-2"):
            result = await run_example("cancel.py", state, run_id=run_id)
            assert result.returncode == 1, run_id
            assert b"is a symlink: refusing to trust it" in result.stderr
        assert group_alive(target.pid)

        payload = example_payload("run-1", marker)
        result = await run_example("dispatch.py", state, stdin=payload)
        assert result.returncode == 1
        assert b"is a symlink: refusing to use it" in result.stderr
        result = await run_example("dispatch.py", state, stdin=example_payload("run-2", marker))
        assert result.returncode == 1
        assert b"is a symlink: refusing to use it" in result.stderr
    assert not processes_carrying(marker)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["agent.json"]


@on_both_loops
async def test_example_dispatch_creates_a_private_state_root(
    tmp_path: Path, stray_groups: list[int]
) -> None:
    state = tmp_path / "new" / "state"
    result = await run_example("dispatch.py", state, stdin=example_payload("run-1", "x", "echo"))
    assert result.returncode == 0, result.stderr
    stray_groups.append(json.loads((state / "run-1" / "agent.json").read_text())["pgid"])
    for path in (state, state / "run-1", state / "run-1" / "workspace"):
        assert path.stat().st_mode & 0o777 == 0o700, path
    assert (state / "run-1" / "agent.json").stat().st_mode & 0o777 == 0o600


# ------------------------------------------------------------------------ end to end


async def test_end_to_end_hand_off_failure_and_cancellation(tmp_path: Path, lines: Lines) -> None:
    recorder_script = tmp_path / "dispatch.py"
    recorder_script.write_text(
        "import json, os, sys\n"
        "payload = json.load(sys.stdin)\n"
        "out = os.path.join(os.environ['OUT'], payload['run_id'] + '.json')\n"
        "with open(out, 'w') as f:\n"
        "    json.dump(payload, f)\n"
        "if payload['env'].get('BEHAVIOUR') == 'fail':\n"
        "    print('no capacity for run ' + payload['run_id'], file=sys.stderr)\n"
        "    sys.exit(4)\n"
        "print('accepted')\n"
    )
    config = CommandConfig(
        dispatch_command=f"{quote(Path(sys.executable))} {quote(recorder_script)}",
        cancel_command=CANCEL_RECORD,
        environment=(EnvEntry("OUT", str(tmp_path)),),
    )
    backend = ObservedBackend(config, worker_id="w1", environ=worker_environ())
    outcomes: dict[str, TaskOutcome] = {}
    finished, hook = finished_events(outcomes)
    async with running_worker(backend) as local:
        server, worker = local.server, local.worker
        worker.supervisor.events.on_finished.append(hook)
        with anyio.fail_after(20):
            await server.send(
                TaskAssignment(
                    "h1",
                    Task(id="h1"),
                    execution_id="e1",
                    env_vars={"GITHUB_ACCESS_TOKEN": SECRET, "BEHAVIOUR": "ok"},
                )
            )
            await finished["h1"].wait()
            assert outcomes["h1"].result == "handed_off"
            assert outcomes["h1"].message is None
            assert not worker.supervisor.active  # the slot is free at once
            assert "h1" in worker.supervisor.handed_off

            await server.send(TaskAssignment("f1", Task(id="f1"), env_vars={"BEHAVIOUR": "fail"}))
            failed = await server.wait_for(terminal_for("f1"))
            assert failed == TaskFailed(
                "f1",
                "Failed to execute task: dispatch command exited with exit code 4: "
                "no capacity for run f1",
                "dispatch_command",
                None,  # exit_code is the agent's own exit only
            )
            await worker.outbox.wait_empty()
            # The hand-off was claimed and reported nothing after the claim.
            assert server.messages_for("h1") == [TaskClaimed("h1", "w1")]

            await server.send(TaskCancellation("h1"))
            await backend.cancelled["h1"].wait()
        payload = json.loads((tmp_path / "h1.json").read_text())
        assert list(payload) == PAYLOAD_KEYS
        assert payload["worker_id"] == "w1"
        assert payload["execution_id"] == "e1"
        assert payload["env"]["GITHUB_ACCESS_TOKEN"] == SECRET
        env = proc_environ((tmp_path / "cancel-environ").read_bytes())
        assert (env["OZ_RUN_ID"], env["OZ_EXECUTION_ID"], env["OZ_WORKER_BACKEND"]) == (
            "h1",
            "e1",
            "command",
        )
        assert len(cancel_failures(lines)) == 0
        assert server.messages_for("h1") == [TaskClaimed("h1", "w1")]
        assert "h1" not in worker.supervisor.handed_off


def standin_assignment(task_id: str, tmp_path: Path, prompt: str) -> TaskAssignment:
    return TaskAssignment(
        task_id,
        Task(id=task_id),
        execution_id=f"exec-{task_id}",
        env_vars={
            "GITHUB_ACCESS_TOKEN": SECRET,
            "OZ_STANDIN_PROMPT": prompt,
            "OZ_STANDIN_RECORD": str(tmp_path / f"{task_id}-record.json"),
            "OZ_STANDIN_PIDFILE": str(tmp_path / f"{task_id}-pids"),
        },
    )


async def test_end_to_end_example_dispatch_runs_the_agent_and_cancel_kills_it(
    tmp_path: Path, stray_groups: list[int], lines: Lines
) -> None:
    state = tmp_path / "state"
    backend = example_backend(state)
    outcomes: dict[str, TaskOutcome] = {}
    finished, hook = finished_events(outcomes)
    pidfile = tmp_path / "x1-pids"
    async with running_worker(backend) as local:
        server, worker = local.server, local.worker
        worker.supervisor.events.on_finished.append(hook)
        with anyio.fail_after(30):
            # A SIGTERM-proof child in the agent's group: cancel.py must escalate to SIGKILL.
            await server.send(standin_assignment("x1", tmp_path, "spawn child; sleep 600"))
            await finished["x1"].wait()
            assert outcomes["x1"].result == "handed_off"
            info = json.loads((state / "x1" / "agent.json").read_text())
            stray_groups.append(info["pgid"])
            assert info["pgid"] != os.getpgid(0)  # detached from the worker
            await poll_until(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2)
            pids = [int(p) for p in pidfile.read_text().split()]
            assert pids[0] == info["pid"]
            assert group_alive(info["pgid"])

            record = json.loads((tmp_path / "x1-record.json").read_text())
            assert record["argv"][1:3] == ["agent", "run"]
            assert record["argv"][record["argv"].index("--task-id") + 1] == "x1"
            assert record["cwd"] == str(state / "x1" / "workspace")
            assert record["env"]["GITHUB_ACCESS_TOKEN"] == SECRET
            assert "WARP_API_KEY" not in record["env"]
            assert "OZ_COMMAND_STATE_DIR" not in record["env"]
            assert "OZ_RUN_ID" not in record["env"]
            assert SECRET not in (state / "x1" / "agent.json").read_text()

            await server.send(TaskCancellation("x1"))
            await backend.cancelled["x1"].wait()
        assert len(cancel_failures(lines)) == 0
        assert not group_alive(info["pgid"])
        cancelled = json.loads((state / "x1" / "cancelled.json").read_text())
        assert cancelled["execution_id"] == "exec-x1"
        await worker.outbox.wait_empty()
        assert server.messages_for("x1") == [TaskClaimed("x1", "w1")]


async def test_end_to_end_shutdown_leaves_handed_off_work_alone(
    tmp_path: Path, stray_groups: list[int]
) -> None:
    state = tmp_path / "state"
    backend = example_backend(state)
    outcomes: dict[str, TaskOutcome] = {}
    finished, hook = finished_events(outcomes)
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        with anyio.fail_after(30):
            async with trio.open_nursery() as worker_nursery:
                worker = await start_worker(worker_nursery, server.url, backend)
                worker.supervisor.events.on_finished.append(hook)
                await server.send(standin_assignment("s1", tmp_path, "sleep 600"))
                await finished["s1"].wait()
                info = json.loads((state / "s1" / "agent.json").read_text())
                stray_groups.append(info["pgid"])
                worker.request_stop()
            # The worker has stopped (its run() returned).
        assert group_alive(info["pgid"])
        assert not backend.cancelled
        assert not (state / "s1" / "cancelled.json").exists()
        assert server.messages_for("s1") == [TaskClaimed("s1", "w1")]
        nursery.cancel_scope.cancel()


# ------------------------------------------------------ the Go worker's payload shape

GO_DISPATCH = REPO / "tests" / "scripts" / "go_dispatch.py"


def test_payload_task_always_has_the_go_keys() -> None:
    assert payload_task({"id": "run-1"}, "run-1") == {
        "id": "run-1",
        "title": "",
        "task_definition": {"prompt": ""},
        "created_at": GO_ZERO_TIME,
        "updated_at": GO_ZERO_TIME,
    }
    received = {
        "id": "run-1",
        "title": None,
        "task_definition": {"prompt": "fix it", "extra": 1},
        "created_at": "2026-12-01T20:00:00Z",
        "owner": {"Type": "TEAM", "Id": 7},
        "unknown_field": [1, 2],
    }
    assert payload_task(received, "run-1") == {
        "id": "run-1",
        "title": "",
        "task_definition": {"prompt": "fix it", "extra": 1},
        "created_at": "2026-12-01T20:00:00Z",
        "updated_at": GO_ZERO_TIME,
        "owner": {"Type": "TEAM", "Id": 7},
        "unknown_field": [1, 2],
    }
    assert received["title"] is None  # the caller's mapping is not changed


def test_execution_id_is_a_string_even_when_absent() -> None:
    assert dispatch_payload(make_params(execution_id=None), worker_id="w1")["execution_id"] == ""
    assert (
        dispatch_payload(make_params(execution_id="e-7"), worker_id="w1")["execution_id"] == "e-7"
    )


@on_both_loops
@pytest.mark.parametrize("complete", [True, False])
async def test_a_dispatch_script_written_for_the_go_worker_runs_unchanged(
    tmp_path: Path, complete: bool
) -> None:
    out = tmp_path / "body.json"
    backend = backend_for(
        f"{quote(Path(sys.executable))} {quote(GO_DISPATCH)}",
        environment=(EnvEntry("GO_DISPATCH_OUT", str(out)),),
    )
    task = (
        Task(
            id="run-1",
            title="Fix the flaky test",
            task_definition={"prompt": "make it pass"},
            created_at="2026-12-01T20:00:00Z",
            updated_at="2026-12-01T20:01:00Z",
            raw={
                "id": "run-1",
                "title": "Fix the flaky test",
                "task_definition": {"prompt": "make it pass"},
                "created_at": "2026-12-01T20:00:00Z",
                "updated_at": "2026-12-01T20:01:00Z",
            },
        )
        if complete
        else Task(id="run-1", raw={"id": "run-1"})
    )
    assignment = TaskAssignment(
        "run-1",
        task,
        execution_id="exec-1" if complete else None,
        env_vars={"GITHUB_ACCESS_TOKEN": SECRET},
        sidecar_image="warpdotdev/warp-agent:latest",
    )
    params = build_task_params(assignment, ParamSettings(server_root_url=ROOT_URL))
    log, recorder = recording_log("run-1")
    with anyio.fail_after(20):
        assert await backend.open_task(params, log).execute() is ExecuteResult.HANDED_OFF
    run = json.loads(out.read_text())["run"]
    assert run["execution_id"] == ("exec-1" if complete else "")
    assert run["metadata"]["title"] == ("Fix the flaky test" if complete else "")
    assert run["metadata"]["prompt"] == ("make it pass" if complete else "")
    assert run["env"]["GITHUB_ACCESS_TOKEN"] == SECRET
    assert run["mounts"] == [
        {"image": "warpdotdev/warp-agent:latest", "path": "/agent", "read_write": False}
    ]
    assert run["command"][:2] == ["agent", "run"]
    assert recorder.lines(logging.WARNING) == []
