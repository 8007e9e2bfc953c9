"""One docker task in a test: a backend on the test engine, a task's parameters, its
captured log, setup → execute → teardown, the engine's view of it, and docker CLI
wrappers (the test seam that records calls or injects failures)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import textwrap
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs

from ozw.backends.base import ExecuteResult
from ozw.backends.docker import DockerBackend, DockerTaskRun
from ozw.backends.docker.references import volume_name
from ozw.backends.docker.rules import LABEL_TASK, LABEL_WORKER
from ozw.config import DockerConfig, PullPolicy
from ozw.tasks.failures import TaskFailure
from ozw.tasks.params import Shape, Sidecar, TaskParams
from ozw.telemetry.logs import TaskLog
from tests.docker.conftest import Engine, Images
from tests.support.params import make_params as task_params

KILL_GRACE = 2.0
KILL_ALL_GRACE = 120.0


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


@attrs.frozen
class Ran:
    """A task run to its end: its id, its outcome, the run and its captured log."""

    task_id: str
    outcome: ExecuteResult | TaskFailure
    run: DockerTaskRun
    log: CapturedLog

    @property
    def failure(self) -> TaskFailure:
        return failure_of(self.outcome)


async def run_agent_task(
    backend: DockerBackend,
    images: Images,
    label: str,
    *,
    image: str | None = None,
    agent_image: str | None = None,
    sidecars: Sequence[Sidecar] = (),
    env: Mapping[str, str] | None = None,
    shape: Shape | None = None,
    base_args: Sequence[str] = ("agent", "run"),
) -> Ran:
    """A task of the test task image (or ``image``) with the agent sidecar (of
    ``agent_image``) and ``sidecars`` after it, run to its end."""
    task_id = new_task_id(label)
    log = CapturedLog(task_id)
    every_sidecar = [agent(images, agent_image), *sidecars]
    params = make_params(
        task_id, image or images.task, sidecars=every_sidecar, env=env, shape=shape,
        base_args=base_args,
    )  # fmt: skip
    outcome, run = await run_task(backend, params, log)
    return Ran(task_id, outcome, run, log)


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


async def remove_kept(engine: Engine, run: DockerTaskRun, *volumes: str) -> None:
    """Remove what a run with cleanup off kept: its container, its private volumes, and
    ``volumes``."""
    if run.container is not None:
        await docker(engine, "rm", "--force", run.container, check=False)
    kept = [*volumes, *run.private_volumes]
    if kept:
        await docker(engine, "volume", "rm", "--force", *kept, check=False)


async def task_containers(engine: Engine, task_id: str, *, running_only: bool = False) -> list[str]:
    return await containers(engine, f"{LABEL_TASK}={task_id}", running_only=running_only)


async def worker_containers(engine: Engine, backend: DockerBackend) -> list[str]:
    return await containers(engine, f"{LABEL_WORKER}={backend.worker_id}")


async def volume_listed(engine: Engine, name: str) -> str:
    """``name`` when the engine has that volume, else ``""``."""
    return await docker(engine, "volume", "ls", "--quiet", f"--filter=name=^{name}$")


async def sidecar_volume(engine: Engine, image: str) -> str:
    """The name of the shared volume of sidecar ``image``."""
    return volume_name(image, await docker(engine, "image", "inspect", "--format={{.Id}}", image))


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


def calls_per_line_backend(
    engine: Engine, tmp_path: Path, **config: Any
) -> tuple[DockerBackend, Path]:
    """A backend whose docker CLI wrapper writes each call's arguments as a line, and
    that file; what engine connections carry is kept beside it (:func:`engine_requests`)."""
    calls = tmp_path / "calls"
    body = f"""
        printf "%s\\n" "$*" >> {calls}
        if [ "$1 $2" = "system dial-stdio" ]; then tee -a {calls}.http | $REAL "$@"; exit; fi
        """
    return make_backend(engine, docker=wrapper_docker(tmp_path, body), **config), calls


def engine_requests(calls: Path) -> list[str]:
    """``METHOD target`` of each engine API request since ``calls`` was last removed."""
    http = calls.with_name(calls.name + ".http")
    raw = http.read_bytes().decode(errors="replace") if http.exists() else ""
    return [f"{m[1]} {m[2]}" for m in re.finditer(r"(GET|POST|DELETE|PUT) (\S+) HTTP/1\.1", raw)]


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


@attrs.frozen
class Sleeper:
    """A task whose agent sleeps, running in the background: its id and log, the scope
    to cancel it, the event of its end and its outcome (none when cancelled)."""

    task_id: str
    log: CapturedLog
    scope: anyio.CancelScope
    done: anyio.Event
    ended: list[ExecuteResult | TaskFailure]

    async def stop(self) -> None:
        self.scope.cancel()
        await self.done.wait()


async def start_sleeper(
    nursery: anyio.abc.TaskGroup,
    backend: DockerBackend,
    images: Images,
    label: str,
    *,
    image: str | None = None,
    agent_image: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Sleeper:
    """Run a task whose agent sleeps 300 s in the background, until it says it sleeps."""
    task_id = new_task_id(label)
    sidecars = [agent(images, agent_image)]
    env = {**(env or {}), "STANDIN_BEHAVIOUR": "sleep:300"}
    params = make_params(task_id, image or images.task, sidecars=sidecars, env=env)
    sleeper = Sleeper(task_id, CapturedLog(task_id), anyio.CancelScope(), anyio.Event(), [])

    async def task() -> None:
        try:
            with sleeper.scope:
                outcome, _ = await run_task(backend, params, sleeper.log)
                sleeper.ended.append(outcome)
        finally:
            sleeper.done.set()

    nursery.start_soon(task)
    await sleeper.log.wait_for("standin: sleeping")
    return sleeper


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
