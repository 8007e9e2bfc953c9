"""Starting and stopping against a real engine: the check, a killed worker's leftovers
reaped, cancellation within the grace, ``kill_all``, a hung docker call, a lost container."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
import uuid
from pathlib import Path

import anyio
import anyio.abc
import pytest

from ozw.backends.docker import SUPPORTED_PLATFORMS
from ozw.backends.docker.rules import LABEL_TASK, LABEL_WORKER
from ozw.tasks.failures import BackendUnavailable, FailureReason, TaskFailure
from tests.docker.conftest import Engine, Images
from tests.docker.runs import (
    KILL_ALL_GRACE,
    KILL_GRACE,
    containers,
    docker,
    make_backend,
    remove_kept,
    run_agent_task,
    start_sleeper,
    task_containers,
    until_running,
    worker_containers,
    wrapper_docker,
)
from tests.support.event_loops import on_both_loops


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


@on_both_loops
async def test_cancellation_stops_and_removes_the_container_within_the_grace(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    async with anyio.create_task_group() as nursery:
        sleeper = await start_sleeper(nursery, backend, images, "cancel")
        await until_running(engine, f"{LABEL_TASK}={sleeper.task_id}")
        started = time.monotonic()
        await sleeper.stop()
        elapsed = time.monotonic() - started
    # The container's PID 1 (a shell) ignores SIGTERM: this takes the whole grace.
    assert elapsed <= KILL_GRACE + 5, elapsed
    assert sleeper.ended == []  # cancelled, not completed or failed
    assert await task_containers(engine, sleeper.task_id) == []
    assert backend.live_containers == frozenset()
    print(f"cancellation to removal: {elapsed:.2f}s (kill_grace {KILL_GRACE:g}s)")


@on_both_loops
async def test_kill_all_removes_running_containers_at_once(engine: Engine, images: Images) -> None:
    # A grace far above the bound: a graceful stop (the standin ignores SIGTERM) would
    # take all of it, so ending within half of it shows kill_all did not wait.
    backend = make_backend(engine, kill_grace=KILL_ALL_GRACE)
    async with anyio.create_task_group() as nursery:
        sleeper = await start_sleeper(nursery, backend, images, "killall")
        started = time.monotonic()
        await backend.kill_all()
        elapsed = time.monotonic() - started
        assert await task_containers(engine, sleeper.task_id) == []
        with anyio.fail_after(KILL_ALL_GRACE / 2):
            await sleeper.done.wait()
    assert elapsed < KILL_ALL_GRACE / 2, elapsed
    assert backend.live_containers == frozenset()
    assert len(sleeper.ended) == 1
    assert isinstance(sleeper.ended[0], TaskFailure)


@pytest.mark.parametrize(
    ("command", "reason", "what"),
    [
        # The engine connection's first request is the image inspection.
        ("system dial-stdio", FailureReason.IMAGE_PULL, "inspecting image"),
        ("volume inspect", FailureReason.SIDECAR_PREP, "inspecting"),
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
    sidecar = images.fresh_sidecar(engine, "hung")
    # Only a container that exited non-zero is inspected before the result.
    env = {"STANDIN_BEHAVIOUR": "exit:3"} if command == "container inspect" else {}
    started = time.monotonic()
    with anyio.fail_after(300):
        ran = await run_agent_task(backend, images, "hung", agent_image=sidecar, env=env)
    elapsed = time.monotonic() - started
    assert ran.failure.reason is reason, ran.failure
    assert ran.failure.cause.startswith(what), ran.failure.cause
    assert "did not finish within 20s" in ran.failure.cause
    assert elapsed < 240, elapsed
    assert await worker_containers(engine, backend) == []


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
    ran = await run_agent_task(backend, images, "lost", env={"STANDIN_BEHAVIOUR": "sleep:300"})
    try:
        assert ran.failure.reason is FailureReason.CONTAINER_WAIT
        assert "injected wait failure" in ran.failure.cause
        assert await task_containers(engine, ran.task_id, running_only=True) == []
        assert await task_containers(engine, ran.task_id) == [ran.run.container]
        assert backend.live_containers == frozenset()
    finally:
        await remove_kept(engine, ran.run)
