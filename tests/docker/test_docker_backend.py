"""The docker backend against a real engine (see ``tests/docker/README.md``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from ozw.backends.base import ExecuteResult
from ozw.backends.docker import SUPPORTED_PLATFORMS, DockerBackend, DockerTaskRun
from ozw.backends.docker.container import LABEL_EXECUTION, LABEL_ROLE, LABEL_TASK, LABEL_WORKER
from ozw.backends.docker.references import private_volume_name, volume_name
from ozw.config import DockerConfig, EnvEntry, PullPolicy
from ozw.tasks.failures import BackendUnavailable, FailureReason, TaskFailure
from ozw.tasks.params import Shape, Sidecar, TaskParams
from ozw.telemetry.logs import TaskLog
from tests.docker.conftest import (
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    Engine,
    Images,
    Registries,
    busybox_rootfs,
    import_image,
)
from tests.support.event_loops import on_both_loops
from tests.support.params import make_params as task_params
from tests.support.procs import cmdlines_containing

KILL_GRACE = 2.0
KILL_ALL_GRACE = 120.0


# --- helpers ---------------------------------------------------------------------------


class CapturedLog(logging.Handler):
    """Collects one task's log lines (message and relayed stream)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str | None, str]] = []
        self._changed = anyio.Event()
        logger = logging.Logger(f"ozw.test.{task_id}", logging.DEBUG)
        logger.addHandler(self)
        self.log = TaskLog(task_id, logger)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((getattr(record, "stream", None), record.getMessage()))
        self._changed.set()
        self._changed = anyio.Event()

    def standin(self, prefix: str = "") -> list[str]:
        """The stand-in agent's report lines (``standin: `` stripped) starting with prefix."""
        lines = [
            message.removeprefix("standin: ")
            for stream, message in self.records
            if stream == "agent stdout" and message.startswith("standin: ")
        ]
        return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]

    def env(self) -> dict[str, str]:
        return dict(line.partition("=")[::2] for line in self.standin("env="))

    def messages(self) -> list[str]:
        return [message for _, message in self.records]

    async def wait_for(self, text: str, timeout: float = 120.0) -> None:
        with anyio.fail_after(timeout):
            while not any(text in message for _, message in self.records):
                await self._changed.wait()


def make_params(
    task_id: str,
    image: str,
    *,
    sidecars: Sequence[Sidecar] = (),
    env: Mapping[str, str] | None = None,
    base_args: Sequence[str] = ("agent", "run"),
    shape: Shape | None = None,
    execution_id: str | None = "exec-1",
) -> TaskParams:
    return task_params(
        task_id,
        image=image,
        execution_id=execution_id,
        env=env,
        base_args=base_args,
        sidecars=tuple(sidecars),
        instance_shape=shape,
    )


def make_backend(
    engine: Engine,
    *,
    pull_policy: PullPolicy = "never",
    worker_id: str | None = None,
    environ: Mapping[str, str] | None = None,
    docker: str = "docker",
    cleanup: bool = True,
    **config: Any,
) -> DockerBackend:
    return DockerBackend(
        DockerConfig(**{"pull_policy": pull_policy, "kill_grace": KILL_GRACE, **config}),
        worker_id=worker_id or f"w-{uuid.uuid4().hex[:8]}",
        cleanup=cleanup,
        environ={**engine.env, **(environ or {})},
        docker=docker,
    )


def new_task_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:6]}"


def agent(images: Images, image: str | None = None) -> Sidecar:
    return Sidecar(image or images.agent, "/agent")


async def run_task(
    backend: DockerBackend,
    params: TaskParams,
    captured: CapturedLog,
    teardown_errors: list[str] | None = None,
) -> tuple[ExecuteResult | TaskFailure, DockerTaskRun]:
    """setup → execute → teardown as the lifecycle does; the result or the failure.
    With ``teardown_errors``, a teardown's RuntimeError is added there, not raised."""
    run = backend.open_task(params, captured.log)
    assert isinstance(run, DockerTaskRun)
    outcome: ExecuteResult | TaskFailure
    try:
        await run.setup()
        outcome = await run.execute()
    except TaskFailure as failure:
        outcome = failure
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await run.teardown()
            except RuntimeError as exc:
                if teardown_errors is None:
                    raise
                teardown_errors.append(str(exc))
    return outcome, run


async def docker(engine: Engine, *args: str, check: bool = True) -> str:
    result = await anyio.run_process(["docker", *args], env=engine.env, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {args} failed: {result.stderr.decode()}")
    return result.stdout.decode().strip()


async def containers(engine: Engine, label: str, *, running_only: bool = False) -> list[str]:
    args = ["ps", "--format={{.Names}}", f"--filter=label={label}"]
    if not running_only:
        args.insert(1, "--all")
    return (await docker(engine, *args)).split()


async def until_running(engine: Engine, label: str) -> None:
    """Wait until a container labelled ``label`` is running. The agent's first output
    can come before the daemon has recorded the start (it does so once containerd's
    start returns), and the engine has no event to wait on: poll, generously bounded."""
    with anyio.fail_after(30):
        while not await containers(engine, label, running_only=True):  # noqa: ASYNC110 - no engine event
            await anyio.sleep(0.1)


def failure_of(outcome: ExecuteResult | TaskFailure) -> TaskFailure:
    assert isinstance(outcome, TaskFailure), f"expected a failure, got {outcome!r}"
    return outcome


def wrapper_docker(tmp_path: Path, body: str) -> str:
    """A docker CLI wrapper script (a test seam: record calls, inject failures)."""
    real = shutil.which("docker")
    assert real is not None
    path = tmp_path / "docker"
    path.write_text(f'#!/bin/sh\nREAL={real}\n{textwrap.dedent(body)}\nexec $REAL "$@"\n')
    path.chmod(0o755)
    return str(path)


def calls_per_line_docker(tmp_path: Path) -> tuple[str, Path]:
    """A docker CLI wrapper writing each call's arguments as a line, and that file."""
    calls = tmp_path / "calls"
    return wrapper_docker(tmp_path, f'printf "%s\\n" "$*" >> {calls}'), calls


def recording_docker(tmp_path: Path) -> tuple[str, Path]:
    """A docker CLI wrapper recording every call, and the directory of its records.

    Each call writes its arguments (NUL-separated) and its own environment (from
    ``/proc``) to files of its own, then execs the real CLI, which keeps exactly that
    environment: the records cover every docker CLI child, however short-lived."""
    records = tmp_path / "docker-calls"
    records.mkdir()
    body = f"""
        record=$(mktemp {records}/call.XXXXXX)
        printf '%s\\0' "$@" > "$record.argv"
        cat /proc/$$/environ > "$record.environ"
        """
    return wrapper_docker(tmp_path, body), records


def recorded_calls(records: Path) -> list[tuple[list[bytes], bytes]]:
    """``(argv, environ)`` of every call the recording wrapper saw."""
    return [
        (argv.read_bytes().split(b"\0")[:-1], argv.with_suffix(".environ").read_bytes())
        for argv in sorted(records.glob("*.argv"))
    ]


# --- start-up --------------------------------------------------------------------------


@on_both_loops
async def test_check_accepts_the_engine_and_refuses_an_unreachable_one(engine: Engine) -> None:
    backend = make_backend(engine)
    await backend.check()
    assert backend.platform in SUPPORTED_PLATFORMS

    unreachable = make_backend(engine, environ={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    with pytest.raises(BackendUnavailable) as caught:
        await unreachable.check()
    assert "cannot reach the Docker daemon" in str(caught.value)
    assert "\n" not in str(caught.value)

    missing = make_backend(engine, docker="/nonexistent/docker")
    with pytest.raises(BackendUnavailable, match="was not found"):
        await missing.check()


@on_both_loops
async def test_leftovers_of_a_killed_worker_are_reaped_on_the_next_start(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    worker_id = f"w-killed-{uuid.uuid4().hex[:6]}"
    script = textwrap.dedent(
        """
        import json, os, sys, trio
        from ozw.backends.docker import DockerBackend
        from ozw.config import DockerConfig
        from ozw.telemetry.logs import TaskLog
        from ozw.tasks.params import Sidecar, TaskParams

        spec = json.loads(sys.argv[1])
        backend = DockerBackend(DockerConfig(pull_policy="never"), worker_id=spec["worker"])
        params = TaskParams(
            task_id="doomed", run_id="doomed", execution_id=None,
            env={"STANDIN_BEHAVIOUR": "sleep:300"}, image=spec["image"],
            sidecars=(Sidecar(spec["agent"], "/agent"), Sidecar(spec["agent"], "/rw", True)),
            base_args=("agent",),
            harness=None, environment_id=None, server_root_url=None, task={},
        )

        async def main() -> None:
            run = backend.open_task(params, TaskLog("doomed"))
            await run.setup()
            await run.execute()

        trio.run(main)
        """
    )
    spec = json.dumps({"worker": worker_id, "image": images.task, "agent": images.agent})
    # An unrelated container of another worker must survive the reaping.
    bystander = await docker(
        engine, "create", f"--label={LABEL_WORKER}=someone-else", images.task, "true"
    )
    process = await anyio.open_process(
        [sys.executable, "-c", script, spec],
        stdin=None,
        stdout=None,
        stderr=None,
        env={**engine.env, "PYTHONPATH": os.pathsep.join(sys.path)},
        start_new_session=True,
    )
    try:
        with anyio.fail_after(60):
            while not await containers(engine, f"{LABEL_WORKER}={worker_id}", running_only=True):
                assert process.returncode is None, "the doomed worker died before its task started"
                await anyio.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)  # a crash: no clean-up at all
        await process.wait()
        left = await containers(engine, f"{LABEL_WORKER}={worker_id}", running_only=True)
        assert len(left) == 1, "killing the worker (and its docker CLI) leaves the container"
        owned = f"--filter=label={LABEL_WORKER}={worker_id}"
        assert len((await docker(engine, "volume", "ls", "--quiet", owned)).split()) == 1

        successor = make_backend(engine, worker_id=worker_id)
        await successor.check()
        # check() alone changes nothing: `ozw check` may run beside a live worker.
        assert len(await containers(engine, f"{LABEL_WORKER}={worker_id}")) == 1
        await successor.recover()
        assert await containers(engine, f"{LABEL_WORKER}={worker_id}") == []
        # ... and the private volume of its read-write sidecar.
        assert await docker(engine, "volume", "ls", "--quiet", owned) == ""
        assert await docker(engine, "ps", "--all", "--quiet", f"--filter=id={bystander}")
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
        await docker(engine, "rm", "--force", bystander, check=False)


# --- one task, everything it sees -------------------------------------------------------


@on_both_loops
async def test_task_sees_argv_env_workdir_mounts_limits_and_labels(
    engine: Engine, images: Images
) -> None:
    task_id = new_task_id("full")
    base_args = (
        "agent", "run", "--task-id", task_id, "--mcp", '{"a": "b c"}',
        "--", "-e", "X=1", "$HOME", "", "quote'\"",
    )  # fmt: skip
    data, data_ro = f"{images.prefix}-data-{task_id}", f"{images.prefix}-dataro-{task_id}"
    backend = DockerBackend(
        DockerConfig(
            pull_policy="never",
            kill_grace=KILL_GRACE,
            volumes=(f"{data}:/data", f"{data_ro}:/data-ro:ro"),
            environment=(
                EnvEntry("CONFIGURED", "from-config"),
                EnvEntry("INHERITED"),
                EnvEntry("ABSENT_IN_WORKER"),
                EnvEntry("OVERRIDDEN", "by-config"),
            ),
        ),
        worker_id=f"w-{uuid.uuid4().hex[:8]}",
        cleanup=False,  # keep the container to inspect it
        environ={**engine.env, "INHERITED": "from-worker"},
    )
    params = make_params(
        task_id,
        images.task,
        sidecars=[
            agent(images),
            Sidecar(images.extra, "/extra"),
            Sidecar(images.extra, "/rw", read_write=True),
        ],
        env={
            "SECRET_TOKEN": "s3cr3t value",
            "SPACES": " a  b ",
            # CLI-sensitive names: they must reach the container, not steer the CLI.
            "HOME": "/home/agent",
            "DOCKER_HOST": "tcp://task-value.invalid:1",
            "OVERRIDDEN": "by-task",
            "STANDIN_TOUCH": "/agent /extra /rw /data /data-ro /workspace",
            "STANDIN_CAT": "/extra/hello.txt",
        },
        base_args=base_args,
        shape=Shape(vcpus=1, memory_gb=0.25),
    )
    captured = CapturedLog(task_id)
    outcome, run = await run_task(backend, params, captured)
    try:
        assert outcome is ExecuteResult.COMPLETED, captured.messages()
        assert captured.standin("arg=") == list(base_args)
        assert captured.standin("cwd=") == ["/workspace"]
        env = captured.env()
        expected = {
            "TASK_ID": task_id,
            "SECRET_TOKEN": "s3cr3t value",
            "SPACES": " a  b ",
            "HOME": "/home/agent",
            "DOCKER_HOST": "tcp://task-value.invalid:1",
            "CONFIGURED": "from-config",
            "INHERITED": "from-worker",
            "OVERRIDDEN": "by-config",
        }
        assert {name: env.get(name) for name in expected} == expected
        assert "ABSENT_IN_WORKER" not in env
        touched = dict(line.partition("=")[::2] for line in captured.standin("touch "))
        assert touched == {
            "/agent": "fail",
            "/extra": "fail",
            "/rw": "ok",
            "/data": "ok",
            "/data-ro": "fail",
            "/workspace": "ok",
        }
        assert captured.standin("cat /extra/hello.txt=") == ["hello from extra"]

        assert run.container is not None
        info = json.loads(await docker(engine, "container", "inspect", run.container))[0]
        host_config, config = info["HostConfig"], info["Config"]
        assert host_config["NanoCpus"] == 1_000_000_000
        assert host_config["Memory"] == host_config["MemorySwap"] == 256 * 1024 * 1024
        assert config["WorkingDir"] == "/workspace"
        assert config["Entrypoint"] is None  # the image's own, and this one has none
        assert config["Cmd"] == ["/agent/entrypoint.sh", *base_args]
        labels = config["Labels"]
        assert labels[LABEL_WORKER] == backend.worker_id
        assert labels[LABEL_TASK] == task_id
        assert labels[LABEL_EXECUTION] == "exec-1"
        agent_volume, extra_volume, rw_volume = (s.volume for s in run.sidecars)
        # The read-write mount is a private copy, never the shared volume.
        assert rw_volume == private_volume_name(extra_volume, run.suffix)
        # The CLI keeps -v flags in a map, so the engine's order is not the argv's
        # (the argv order is checked in test_docker_rules; the engine sorts mounts by
        # path depth itself, so the order never changes what the task sees).
        assert sorted(host_config["Binds"]) == sorted(
            [
                f"{agent_volume}:/agent:ro",
                f"{extra_volume}:/extra:ro",
                f"{rw_volume}:/rw:rw",
                f"{data}:/data",
                f"{data_ro}:/data-ro:ro",
            ]
        )
        assert backend.live_containers == frozenset()
    finally:
        if run.container is not None:
            await docker(engine, "rm", "--force", run.container, check=False)
        kept = [data, data_ro, *run.private_volumes]  # cleanup off keeps the private one
        await docker(engine, "volume", "rm", "--force", *kept, check=False)


# --- exits ----------------------------------------------------------------------------


@on_both_loops
async def test_non_zero_exit_is_container_exit_and_the_container_is_removed(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("exit")
    params = make_params(
        task_id, images.task, sidecars=[agent(images)], env={"STANDIN_BEHAVIOUR": "exit:3"}
    )
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(backend, params, captured)
    failure = failure_of(outcome)
    assert (failure.reason, failure.exit_code) == (FailureReason.CONTAINER_EXIT, 3)
    assert failure.cause == "the agent exited with exit code 3"
    assert captured.standin("arg=") == ["agent", "run"]  # output was relayed live
    assert await containers(engine, f"{LABEL_TASK}={task_id}") == []
    assert backend.live_containers == frozenset()


@on_both_loops
async def test_memory_hog_under_a_small_shape_is_container_oom(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("oom")
    params = make_params(
        task_id,
        images.task,
        sidecars=[agent(images)],
        env={"STANDIN_BEHAVIOUR": "oom"},
        shape=Shape(memory_gb=0.02),
    )
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(backend, params, captured)
    failure = failure_of(outcome)
    assert captured.standin("hogging") == [" memory"]
    assert (failure.reason, failure.exit_code) == (FailureReason.CONTAINER_OOM, 137), failure
    assert "ran out of memory" in failure.cause


@on_both_loops
async def test_exit_137_under_a_memory_limit_without_an_oom_is_container_exit(
    engine: Engine, images: Images
) -> None:
    # The engine's event log is asked for a late OOM report; none comes.
    backend = make_backend(engine)
    task_id = new_task_id("exit137")
    params = make_params(
        task_id,
        images.task,
        sidecars=[agent(images)],
        env={"STANDIN_BEHAVIOUR": "exit:137"},
        shape=Shape(memory_gb=0.5),
    )
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(backend, params, captured)
    failure = failure_of(outcome)
    assert (failure.reason, failure.exit_code) == (FailureReason.CONTAINER_EXIT, 137), failure
    assert not any("OOM" in message for message in captured.messages())
    assert event_watchers(task_id) == [], "the `docker events` of the late OOM check still runs"


def event_watchers(task_id: str) -> list[int]:
    """Processes running ``docker events`` about a container of ``task_id``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"events" in argv and any(task_id.encode() in arg for arg in argv):
            found.append(int(entry))
    return found


@on_both_loops
async def test_missing_entrypoint_is_container_start(engine: Engine, images: Images) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("nostart")
    outcome, _ = await run_task(backend, make_params(task_id, images.task), CapturedLog(task_id))
    failure = failure_of(outcome)
    assert failure.reason is FailureReason.CONTAINER_START
    assert failure.exit_code is None
    assert "entrypoint.sh" in failure.cause
    assert await containers(engine, f"{LABEL_TASK}={task_id}") == []


@on_both_loops
async def test_a_value_the_engine_refuses_is_container_create(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("create")
    params = make_params(
        task_id, images.task, sidecars=[agent(images)], shape=Shape(memory_gb=0.001)
    )
    outcome, _ = await run_task(backend, params, CapturedLog(task_id))
    failure = failure_of(outcome)
    assert failure.reason is FailureReason.CONTAINER_CREATE
    assert "Minimum memory limit" in failure.cause


# --- sidecars -------------------------------------------------------------------------


@on_both_loops
async def test_sidecar_volume_is_filled_once_and_reused(engine: Engine, images: Images) -> None:
    sidecar = images.fresh_sidecar(engine, "reuse")
    first = make_backend(engine)
    for _ in range(2):
        task_id = new_task_id("reuse")
        outcome, _ = await run_task(
            first, make_params(task_id, images.task, sidecars=[agent(images, sidecar)]),
            CapturedLog(task_id),
        )  # fmt: skip
        assert outcome is ExecuteResult.COMPLETED
    assert first.fills == 1
    image_id = await docker(engine, "image", "inspect", "--format={{.Id}}", sidecar)
    volume = volume_name(sidecar, image_id)
    assert await docker(engine, "volume", "ls", "--quiet", f"--filter=name=^{volume}$") == volume

    # A restarted worker finds the marker and reuses the volume too.
    restarted = make_backend(engine)
    task_id = new_task_id("reuse")
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(
        restarted, make_params(task_id, images.task, sidecars=[agent(images, sidecar)]), captured
    )
    assert outcome is ExecuteResult.COMPLETED
    assert restarted.fills == 0
    assert f"reusing sidecar volume {volume}" in captured.messages()


@on_both_loops
async def test_a_volume_without_marker_is_filled_before_use(engine: Engine, images: Images) -> None:
    sidecar = images.fresh_sidecar(engine, "half")
    image_id = await docker(engine, "image", "inspect", "--format={{.Id}}", sidecar)
    volume = volume_name(sidecar, image_id)
    await docker(engine, "volume", "create", volume)  # as a crash mid-fill leaves it
    backend = make_backend(engine)
    task_id = new_task_id("half")
    outcome, _ = await run_task(
        backend, make_params(task_id, images.task, sidecars=[agent(images, sidecar)]),
        CapturedLog(task_id),
    )  # fmt: skip
    assert outcome is ExecuteResult.COMPLETED
    assert backend.fills == 1


@on_both_loops
async def test_concurrent_tasks_with_one_new_sidecar_fill_it_once(
    engine: Engine, images: Images
) -> None:
    sidecar = images.fresh_sidecar(engine, "concurrent")
    backend = make_backend(engine)
    outcomes: list[ExecuteResult | TaskFailure] = []

    async def one() -> None:
        task_id = new_task_id("concurrent")
        params = make_params(task_id, images.task, sidecars=[agent(images, sidecar)])
        outcome, _ = await run_task(backend, params, CapturedLog(task_id))
        outcomes.append(outcome)

    async with anyio.create_task_group() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
    assert outcomes == [ExecuteResult.COMPLETED] * 3
    assert backend.fills == 1


@on_both_loops
async def test_a_failed_fill_removes_the_volume(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    sidecar = images.fresh_sidecar(engine, "failfill")
    image_id = await docker(engine, "image", "inspect", "--format={{.Id}}", sidecar)
    failing = wrapper_docker(
        tmp_path,
        """
        if [ "$1" = export ]; then echo "injected export failure" >&2; exit 1; fi
        """,
    )
    backend = make_backend(engine, docker=failing)
    task_id = new_task_id("failfill")
    outcome, _ = await run_task(
        backend, make_params(task_id, images.task, sidecars=[agent(images, sidecar)]),
        CapturedLog(task_id),
    )  # fmt: skip
    failure = failure_of(outcome)
    assert failure.reason is FailureReason.SIDECAR_PREP
    assert "injected export failure" in failure.cause
    volume = volume_name(sidecar, image_id)
    assert await docker(engine, "volume", "ls", "--quiet", f"--filter=name=^{volume}$") == ""
    assert await containers(engine, f"{LABEL_WORKER}={backend.worker_id}") == []


@on_both_loops
async def test_a_read_write_sidecar_gets_a_volume_of_its_own_per_task(
    engine: Engine, images: Images
) -> None:
    sidecar = images.fresh_sidecar(engine, "rw")
    image_id = await docker(engine, "image", "inspect", "--format={{.Id}}", sidecar)
    shared = volume_name(sidecar, image_id)
    backend = make_backend(engine)

    async def one(sidecar_spec: Sidecar, env: Mapping[str, str]) -> tuple[CapturedLog, str]:
        task_id = new_task_id("rw")
        captured = CapturedLog(task_id)
        params = make_params(task_id, images.task, sidecars=[agent(images), sidecar_spec], env=env)
        outcome, run = await run_task(backend, params, captured)
        assert outcome is ExecuteResult.COMPLETED, captured.messages()
        return captured, run.sidecars[1].volume

    # A writer changes its read-write copy; it was filled from the image for it.
    writer, volume = await one(
        Sidecar(sidecar, "/rw", read_write=True),
        {"STANDIN_TOUCH": "/rw", "STANDIN_CAT": "/rw/nonce"},
    )
    assert writer.standin("touch /rw=") == ["ok"]
    assert len(writer.standin("cat /rw/nonce=")[0]) == 32
    assert volume.startswith(f"{shared}-rw-")
    assert await docker(engine, "volume", "ls", "--quiet", f"--filter=name=^{volume}$") == ""

    # Neither a read-only mount of the shared volume nor the next writer sees it.
    reader, mounted = await one(
        Sidecar(sidecar, "/ro"), {"STANDIN_TOUCH": "/ro", "STANDIN_CAT": "/ro/.standin-probe"}
    )
    assert mounted == shared
    assert reader.standin("touch /ro=") == ["fail"]
    assert "No such file" in reader.standin("cat /ro/.standin-probe=")[0]
    second, other = await one(
        Sidecar(sidecar, "/rw", read_write=True), {"STANDIN_CAT": "/rw/.standin-probe"}
    )
    assert other not in (volume, shared)
    assert "No such file" in second.standin("cat /rw/.standin-probe=")[0]
    assert backend.fills == 1  # the shared volume; private copies are not counted

    # Cleanup off keeps the private volume with the container, for debugging.
    keeping = make_backend(engine, cleanup=False)
    task_id = new_task_id("rwkept")
    params = make_params(
        task_id, images.task, sidecars=[agent(images), Sidecar(sidecar, "/rw", read_write=True)]
    )
    outcome, run = await run_task(keeping, params, CapturedLog(task_id))
    try:
        assert outcome is ExecuteResult.COMPLETED
        kept = run.private_volumes[0]
        assert await docker(engine, "volume", "ls", "--quiet", f"--filter=name=^{kept}$") == kept
    finally:
        if run.container is not None:
            await docker(engine, "rm", "--force", run.container, check=False)
        await docker(engine, "volume", "rm", "--force", *run.private_volumes, check=False)


@on_both_loops
async def test_a_cancellation_mid_create_leaves_no_fill_container(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    sidecar = images.fresh_sidecar(engine, "cancelfill")
    created = tmp_path / "created"
    # The fill container is created, then the CLI hangs: cancelled before it returns.
    slow = wrapper_docker(
        tmp_path,
        f"""
        case "$*" in
            *{LABEL_ROLE}=sidecar-fill*) "$REAL" "$@" || exit $?; : > {created}; exec sleep 60 ;;
        esac
        """,
    )
    backend = make_backend(engine, docker=slow)
    task_id = new_task_id("cancelfill")
    run = backend.open_task(
        make_params(task_id, images.task, sidecars=[agent(images, sidecar)]),
        CapturedLog(task_id).log,
    )
    scope = anyio.CancelScope()

    async def setup() -> None:
        with scope:
            await run.setup()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(setup)
            while not await anyio.Path(created).exists():  # noqa: ASYNC110 - a file, no event
                await anyio.sleep(0.05)
            scope.cancel()
        with anyio.CancelScope(shield=True):
            await run.teardown()
    assert scope.cancelled_caught
    assert await containers(engine, f"{LABEL_WORKER}={backend.worker_id}") == []
    assert backend.live_containers == frozenset()


@on_both_loops
async def test_bad_references_and_sidecars_are_refused_before_any_command(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    recording, calls = calls_per_line_docker(tmp_path)
    backend = make_backend(engine, docker=recording)
    cases: list[tuple[TaskParams, FailureReason, str]] = [
        (make_params("t", "-v"), FailureReason.IMAGE_PULL, "not a valid image reference"),
        (make_params("t", "--help"), FailureReason.IMAGE_PULL, "not a valid image reference"),
        (
            make_params("t", images.task, sidecars=[Sidecar("--privileged", "/agent")]),
            FailureReason.SIDECAR_PREP,
            "not a valid image reference",
        ),
        (
            make_params("t", images.task, sidecars=[Sidecar(" ", "/agent")]),
            FailureReason.SIDECAR_PREP,
            "empty image",
        ),
        (
            make_params("t", images.task, sidecars=[Sidecar(images.agent, "")]),
            FailureReason.SIDECAR_PREP,
            "empty mount path",
        ),
        (
            make_params(
                "t",
                images.task,
                sidecars=[Sidecar(images.agent, "/agent"), Sidecar(images.extra, "/agent/")],
            ),
            FailureReason.SIDECAR_PREP,
            "share the mount path /agent",
        ),
    ]
    for params, reason, text in cases:
        outcome, _ = await run_task(backend, params, CapturedLog("t"))
        failure = failure_of(outcome)
        assert (failure.reason, text in failure.cause) == (reason, True), failure
    assert not calls.exists(), calls.read_text()


# --- images and registries ---------------------------------------------------------------


@on_both_loops
async def test_pull_always_from_an_open_registry(
    engine: Engine, images: Images, registries: Registries
) -> None:
    backend = make_backend(engine, pull_policy="always")
    task_id = new_task_id("pull")
    params = make_params(
        task_id,
        registries.open.ref("ozw/task:1"),
        sidecars=[agent(images, registries.open.ref("ozw/agent:1"))],
    )
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(backend, params, captured)
    assert outcome is ExecuteResult.COMPLETED, captured.messages()
    assert any(m.startswith("pulled image") for m in captured.messages())


@on_both_loops
async def test_pull_uses_the_docker_cli_credentials(
    engine: Engine, images: Images, registries: Registries
) -> None:
    image = registries.auth.ref("ozw/task:1")
    sidecars = [agent(images, registries.auth.ref("ozw/agent:1"))]

    anonymous = make_backend(
        engine, pull_policy="always", environ={"DOCKER_CONFIG": registries.empty_config}
    )
    task_id = new_task_id("noauth")
    outcome, _ = await run_task(
        anonymous, make_params(task_id, image, sidecars=sidecars), CapturedLog(task_id)
    )
    failure = failure_of(outcome)
    assert failure.reason is FailureReason.IMAGE_PULL
    assert image in failure.cause
    assert "basic auth credentials" in failure.cause

    logged_in = make_backend(
        engine, pull_policy="always", environ={"DOCKER_CONFIG": registries.docker_config}
    )
    task_id = new_task_id("auth")
    outcome, _ = await run_task(
        logged_in, make_params(task_id, image, sidecars=sidecars), CapturedLog(task_id)
    )
    assert outcome is ExecuteResult.COMPLETED


@on_both_loops
async def test_no_docker_cli_child_or_credential_helper_gets_the_api_key(
    engine: Engine, images: Images, registries: Registries, tmp_path: Path
) -> None:
    api_key = f"wk-{uuid.uuid4().hex}"
    # A credential helper for the password-protected registry: it records its
    # environment and answers with the registry's credentials.
    bin_dir, config_dir = tmp_path / "bin", tmp_path / "docker-config"
    bin_dir.mkdir()
    config_dir.mkdir()
    helper_env = tmp_path / "helper.env"
    helper = bin_dir / "docker-credential-ozwtest"
    helper.write_text(
        "#!/bin/sh\n"
        f"env >> {helper_env}\n"
        'if [ "$1" = get ]; then cat >/dev/null; '
        f"""printf '{{"Username":"{REGISTRY_USER}","Secret":"{REGISTRY_PASSWORD}"}}'; fi\n"""
    )
    helper.chmod(0o755)
    (config_dir / "config.json").write_text(
        json.dumps({"credHelpers": {registries.auth.address: "ozwtest"}})
    )
    recording, records = recording_docker(tmp_path)
    backend = make_backend(
        engine,
        pull_policy="always",
        docker=recording,
        environ={
            "WARP_API_KEY": api_key,
            "DOCKER_CONFIG": str(config_dir),
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
        },
    )
    task_id = new_task_id("apikey")
    params = make_params(
        task_id,
        registries.auth.ref("ozw/task:1"),
        sidecars=[agent(images, registries.auth.ref("ozw/agent:1"))],
        env={"STANDIN_BEHAVIOUR": "sleep:300"},
    )
    captured = CapturedLog(task_id)
    async with anyio.create_task_group() as nursery:
        scope, done, _ = await _start_sleeper(backend, params, captured, nursery)
        scope.cancel()
        await done.wait()
    calls = recorded_calls(records)
    commands = [argv[:2] for argv, _ in calls]
    assert [b"start", b"--attach"] in commands, commands
    assert [b"system", b"dial-stdio"] in commands, commands
    # Every call got the worker's environment without the key (the wrapper saw it).
    assert all(
        environ.startswith(b"DOCKER_CONFIG=") or b"\0DOCKER_CONFIG=" in environ
        for _, environ in calls
    )
    assert [argv for argv, environ in calls if api_key.encode() in environ] == []
    assert [argv for argv, environ in calls if environ.startswith(b"WARP_API_KEY=")] == []
    assert [argv for argv, environ in calls if b"\0WARP_API_KEY=" in environ] == []
    assert helper_env.exists(), "the pull did not use the credential helper"
    assert "WARP_API_KEY" not in helper_env.read_text()
    assert api_key not in helper_env.read_text()


@on_both_loops
async def test_a_missing_image_is_a_clear_image_pull_failure(
    engine: Engine, images: Images, registries: Registries
) -> None:
    missing = registries.open.ref("ozw/missing:1")
    for policy in ("always", "if-not-present"):
        backend = make_backend(engine, pull_policy=policy)
        outcome, _ = await run_task(backend, make_params("m", missing), CapturedLog("m"))
        failure = failure_of(outcome)
        assert failure.reason is FailureReason.IMAGE_PULL
        assert failure.cause.startswith(f"could not pull image {missing}: ")
        assert "not found" in failure.cause or "unknown" in failure.cause

    never = make_backend(engine, pull_policy="never")
    outcome, _ = await run_task(never, make_params("m", missing), CapturedLog("m"))
    failure = failure_of(outcome)
    assert failure.cause == f"image {missing} is not present and pull_policy is 'never'"


@on_both_loops
async def test_if_not_present_uses_a_local_image_without_pulling(
    engine: Engine, images: Images
) -> None:
    # The test images exist in no registry: a pull would fail.
    backend = make_backend(engine, pull_policy="if-not-present")
    task_id = new_task_id("local")
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(
        backend, make_params(task_id, images.task, sidecars=[agent(images)]), captured
    )
    assert outcome is ExecuteResult.COMPLETED
    assert not any("pulling" in m for m in captured.messages())


@on_both_loops
async def test_a_present_image_is_inspected_once_and_again_after_a_failure(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    # A task image of this test's own, so it can be removed under the backend.
    image = f"{images.prefix}/cached-{uuid.uuid4().hex[:8]}:1"
    rootfs = busybox_rootfs({"/nonce": (uuid.uuid4().bytes, 0o644)})
    await anyio.to_thread.run_sync(import_image, engine, image, rootfs)
    recording, calls = calls_per_line_docker(tmp_path)
    backend = make_backend(engine, docker=recording, pull_policy="never")

    async def one() -> tuple[ExecuteResult | TaskFailure, list[str]]:
        calls.unlink(missing_ok=True)
        task_id = new_task_id("cached")
        params = make_params(task_id, image, sidecars=[agent(images)])
        outcome, _ = await run_task(backend, params, CapturedLog(task_id))
        inspected = [c for c in calls.read_text().splitlines() if c.startswith("image inspect")]
        return outcome, inspected

    first, inspected = await one()
    assert first is ExecuteResult.COMPLETED
    assert len(inspected) == 2  # the task image and the agent sidecar, at once
    second, inspected = await one()
    assert second is ExecuteResult.COMPLETED
    assert inspected == []  # known: no inspection per task under never/if-not-present
    await docker(engine, "image", "rm", "--force", image)
    third, _ = await one()
    assert failure_of(third).reason is FailureReason.CONTAINER_CREATE  # by its old ID
    fourth, inspected = await one()
    assert failure_of(fourth).cause == f"image {image} is not present and pull_policy is 'never'"
    assert inspected == [f"image inspect --format={{{{json .}}}} {image}"]  # looked again


@on_both_loops
async def test_an_image_of_another_platform_is_refused_naming_both(
    engine: Engine, images: Images
) -> None:
    daemon = "linux/" + await docker(engine, "version", "--format={{.Server.Arch}}")
    foreign = "linux/arm64" if daemon != "linux/arm64" else "linux/amd64"
    for policy in ("never", "if-not-present"):
        backend = make_backend(engine, pull_policy=policy)
        outcome, _ = await run_task(backend, make_params("p", images.foreign), CapturedLog("p"))
        failure = failure_of(outcome)
        assert failure.reason is FailureReason.IMAGE_PULL
        assert failure.cause == (
            f"image {images.foreign} is for {foreign} but the Docker daemon runs {daemon}"
        )
    backend = make_backend(engine)
    params = make_params("p", images.task, sidecars=[agent(images, images.foreign)])
    failure = failure_of((await run_task(backend, params, CapturedLog("p")))[0])
    assert failure.cause.startswith(f"sidecar image {images.foreign} is for {foreign}")


# --- cancellation, secrets, hard stop -----------------------------------------------------


async def _start_sleeper(
    backend: DockerBackend,
    params: TaskParams,
    captured: CapturedLog,
    nursery: anyio.abc.TaskGroup,
) -> tuple[anyio.CancelScope, anyio.Event, list[BaseException | ExecuteResult]]:
    """Run a task in the background until it reports sleeping; its scope and end event."""
    scope = anyio.CancelScope()
    done = anyio.Event()
    ended: list[BaseException | ExecuteResult] = []

    async def task() -> None:
        try:
            with scope:
                outcome, _ = await run_task(backend, params, captured)
                ended.append(outcome)
        finally:
            done.set()

    nursery.start_soon(task)
    await captured.wait_for("standin: sleeping")
    return scope, done, ended


@on_both_loops
async def test_cancellation_stops_and_removes_the_container_within_the_grace(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("cancel")
    params = make_params(
        task_id, images.task, sidecars=[agent(images)], env={"STANDIN_BEHAVIOUR": "sleep:300"}
    )
    captured = CapturedLog(task_id)
    async with anyio.create_task_group() as nursery:
        scope, done, ended = await _start_sleeper(backend, params, captured, nursery)
        await until_running(engine, f"{LABEL_TASK}={task_id}")
        started = time.monotonic()
        scope.cancel()
        await done.wait()
        elapsed = time.monotonic() - started
    # The container's PID 1 (a shell) ignores SIGTERM: this takes the whole grace.
    assert elapsed <= KILL_GRACE + 5, elapsed
    assert ended == []  # cancelled, not completed or failed
    assert await containers(engine, f"{LABEL_TASK}={task_id}") == []
    assert backend.live_containers == frozenset()
    print(f"cancellation to removal: {elapsed:.2f}s (kill_grace {KILL_GRACE:g}s)")


@on_both_loops
async def test_secret_values_never_appear_on_a_command_line(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    secret = f"ozw-secret-{uuid.uuid4().hex}"
    recording, calls = calls_per_line_docker(tmp_path)
    backend = make_backend(engine, docker=recording, environment=(EnvEntry("CONF", secret + "c"),))
    task_id = new_task_id("secret")
    params = make_params(
        task_id,
        images.task,
        sidecars=[agent(images)],
        env={
            "GITHUB_ACCESS_TOKEN": secret,
            "DOCKER_AUTH_TOKEN": secret + "d",  # a name the docker CLI reads itself
            "STANDIN_BEHAVIOUR": "sleep:300",
        },
    )
    captured = CapturedLog(task_id)
    async with anyio.create_task_group() as nursery:
        scope, done, _ = await _start_sleeper(backend, params, captured, nursery)
        seen = await anyio.to_thread.run_sync(cmdlines_containing, secret.encode())
        scope.cancel()
        await done.wait()
    assert seen == []
    assert secret not in calls.read_text()
    assert "system dial-stdio" in calls.read_text()  # the container's creation
    env = captured.env()
    assert env["GITHUB_ACCESS_TOKEN"] == secret
    assert env["DOCKER_AUTH_TOKEN"] == secret + "d"
    assert env["CONF"] == secret + "c"


@on_both_loops
async def test_any_value_reaches_the_container_exactly_through_a_pipe_only(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    nonce = uuid.uuid4().hex
    # Every docker CLI child: its command line and its environment (the wrapper runs
    # with exactly the environment the real CLI gets); and any file left in /tmp.
    recording, records = recording_docker(tmp_path)
    backend = make_backend(engine, docker=recording)
    task_id = new_task_id("anyvalue")
    values = {
        "SSH_PRIVATE_KEY": f"-----BEGIN {nonce}-----\nabc\ndef\n-----END-----\n",
        "BIG": (nonce * 3200)[: 100 * 1024],
        "EQUALS": f" a=b  c = {nonce} ",
        "TRICKY": f"  #{nonce} = 'q' \"dq\" \r\n\ttab\\",
        # Names the docker CLI (and its dynamic loader, and ssh) read for themselves.
        "HOME": f"/home/{nonce}",
        "LANG": f"xx_{nonce}.UTF-8",
        "TZ": f"Zone/{nonce}",
        "SSH_AUTH_SOCK": f"/nonexistent/ssh-{nonce}",
        "LD_PRELOAD": f"/nonexistent/preload-{nonce}.so",
        "DOCKER_HOST": f"tcp://{nonce}.invalid:1",
    }
    params = make_params(
        task_id,
        images.task,
        sidecars=[agent(images)],
        env={**values, "STANDIN_HASH": " ".join(values)},
    )
    captured = CapturedLog(task_id)
    started = time.time()
    outcome, _ = await run_task(backend, params, captured)
    assert outcome is ExecuteResult.COMPLETED, captured.messages()[-5:]
    hashes = dict(line.partition("=")[::2] for line in captured.standin("sha256 "))
    assert hashes == {
        name: hashlib.sha256(value.encode()).hexdigest() for name, value in values.items()
    }
    calls = recorded_calls(records)
    assert [b"system", b"dial-stdio"] in [argv[:2] for argv, _ in calls]
    assert [argv for argv, _ in calls if any(nonce.encode() in arg for arg in argv)] == []
    assert [argv for argv, environ in calls if nonce.encode() in environ] == []
    leftovers = await anyio.to_thread.run_sync(
        files_containing, Path(tempfile.gettempdir()), nonce, started
    )
    assert leftovers == []


@on_both_loops
async def test_a_value_no_process_can_hold_is_container_create_naming_it(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    recording, calls = calls_per_line_docker(tmp_path)
    backend = make_backend(engine, docker=recording)
    for env, text in [
        ({"HUGE_TOKEN": "x" * 1024 * 1024}, "environment variable HUGE_TOKEN is too large"),
        ({"BAD": "a\0b"}, "environment variable BAD holds a NUL byte"),
        ({"A=B": "x"}, "invalid environment variable name 'A=B'"),
    ]:
        task_id = new_task_id("refused")
        params = make_params(task_id, images.task, sidecars=[agent(images)], env=env)
        failure = failure_of((await run_task(backend, params, CapturedLog(task_id)))[0])
        assert failure.reason is FailureReason.CONTAINER_CREATE
        assert failure.cause.startswith(text), failure.cause
    assert not calls.exists()  # refused before any docker call


@on_both_loops
async def test_the_image_entrypoint_wraps_the_agent_as_in_the_go_worker(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("wrapped")
    base_args = ("agent", "run", "--task-id", task_id, "a b")
    params = make_params(task_id, images.wrapped, sidecars=[agent(images)], base_args=base_args)
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(backend, params, captured)
    assert outcome is ExecuteResult.COMPLETED, captured.messages()
    # The wrapper got /agent/entrypoint.sh and the base arguments, and exec'd them.
    assert captured.standin("wrapper ran with ") == [f"{1 + len(base_args)} arguments"]
    assert captured.standin("arg=") == list(base_args)
    assert captured.env()["WRAPPED_BY"] == "wrapper"


def files_containing(root: Path, needle: str, since: float) -> list[str]:
    """Files under ``root`` changed since ``since`` that hold ``needle`` (the suite's own
    temporary directories and private engines skipped). Other programs share ``/tmp``:
    what vanishes or cannot be read meanwhile is skipped, never an error."""
    found = []
    for directory, subdirectories, files in os.walk(root):
        if Path(directory) == root:
            subdirectories[:] = [
                name
                for name in subdirectories
                if not name.startswith(("pytest-of-", "ozw-dockerd-"))
            ]
        for name in files:
            path = Path(directory, name)
            try:
                status = path.lstat()
                if not stat.S_ISREG(status.st_mode) or status.st_mtime < since:
                    continue  # a FIFO would block the read
                if needle.encode() in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


@on_both_loops
async def test_kill_all_removes_running_containers_at_once(engine: Engine, images: Images) -> None:
    # A grace far above the bound: a graceful stop (the standin ignores SIGTERM) would
    # take all of it, so ending within half of it shows kill_all did not wait.
    backend = make_backend(engine, kill_grace=KILL_ALL_GRACE)
    task_id = new_task_id("killall")
    params = make_params(
        task_id, images.task, sidecars=[agent(images)], env={"STANDIN_BEHAVIOUR": "sleep:300"}
    )
    captured = CapturedLog(task_id)
    async with anyio.create_task_group() as nursery:
        _, done, ended = await _start_sleeper(backend, params, captured, nursery)
        started = time.monotonic()
        await backend.kill_all()
        elapsed = time.monotonic() - started
        assert await containers(engine, f"{LABEL_TASK}={task_id}") == []
        with anyio.fail_after(KILL_ALL_GRACE / 2):
            await done.wait()
    assert elapsed < KILL_ALL_GRACE / 2, elapsed
    assert backend.live_containers == frozenset()
    assert len(ended) == 1
    assert isinstance(ended[0], TaskFailure)


# --- hung daemon, lost container ------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "reason", "what"),
    [
        ("image inspect", FailureReason.IMAGE_PULL, "inspecting image"),
        ("volume inspect", FailureReason.SIDECAR_PREP, "inspecting"),
        ("system dial-stdio", FailureReason.CONTAINER_CREATE, "creating container"),
        ("container inspect", FailureReason.CONTAINER_WAIT, "inspecting container"),
    ],
)
@on_both_loops
async def test_a_hung_docker_call_fails_its_phase_in_time(
    engine: Engine,
    images: Images,
    tmp_path: Path,
    command: str,
    reason: FailureReason,
    what: str,
) -> None:
    hung = wrapper_docker(tmp_path, f'case "$*" in "{command}"*) exec sleep 600 ;; esac')
    backend = make_backend(engine, docker=hung)
    # Generous for the calls that must succeed on a loaded machine (one slow docker CLI
    # start must not fail an earlier phase); the hung one sleeps 600 s.
    backend.cli.call_timeout = 20.0
    task_id = new_task_id("hung")
    sidecar = agent(images, images.fresh_sidecar(engine, "hung"))
    # Only a container that exited non-zero is inspected before the result.
    env = {"STANDIN_BEHAVIOUR": "exit:3"} if command == "container inspect" else {}
    params = make_params(task_id, images.task, sidecars=[sidecar], env=env)
    started = time.monotonic()
    with anyio.fail_after(300):
        outcome, _ = await run_task(backend, params, CapturedLog(task_id))
    elapsed = time.monotonic() - started
    failure = failure_of(outcome)
    assert failure.reason is reason, failure
    assert failure.cause.startswith(what), failure.cause
    assert "did not finish within 20s" in failure.cause
    assert elapsed < 240, elapsed
    assert await containers(engine, f"{LABEL_WORKER}={backend.worker_id}") == []


@on_both_loops
async def test_with_cleanup_off_a_lost_container_is_stopped_and_kept(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    # `docker start` loses its attachment at once (it then exits non-zero: exit 0 means
    # the container exited 0) and `docker wait` fails: the backend loses track of a
    # container that runs on.
    losing = wrapper_docker(
        tmp_path,
        """
        if [ "$1" = start ]; then "$REAL" start "$3"; echo "attach: broken pipe" >&2; exit 1; fi
        if [ "$1" = wait ]; then echo "injected wait failure" >&2; exit 1; fi
        """,
    )
    backend = make_backend(engine, docker=losing, cleanup=False)
    task_id = new_task_id("lost")
    params = make_params(
        task_id, images.task, sidecars=[agent(images)], env={"STANDIN_BEHAVIOUR": "sleep:300"}
    )
    outcome, run = await run_task(backend, params, CapturedLog(task_id))
    try:
        failure = failure_of(outcome)
        assert failure.reason is FailureReason.CONTAINER_WAIT
        assert "injected wait failure" in failure.cause
        assert await containers(engine, f"{LABEL_TASK}={task_id}", running_only=True) == []
        assert await containers(engine, f"{LABEL_TASK}={task_id}") == [run.container]
        assert backend.live_containers == frozenset()
    finally:
        if run.container is not None:
            await docker(engine, "rm", "--force", run.container, check=False)
