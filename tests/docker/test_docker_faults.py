"""The docker backend under faults: a worker killed during ``docker create``, a Docker
daemon restarted while a task runs (see ``tests/docker/README.md``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from ozw.backends.base import ExecuteResult
from ozw.backends.docker import DockerBackend
from ozw.backends.docker.rules import LABEL_WORKER
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.tasks.params import Sidecar
from tests.docker.conftest import Engine, Images, _agent_rootfs, busybox_rootfs, import_image
from tests.docker.engine import NoEngine, PrivateDockerd
from tests.docker.runs import (
    CapturedLog,
    agent,
    files_containing,
    make_backend,
    make_params,
    new_task_id,
    run_task,
    wrapper_docker,
)
from tests.support.event_loops import on_both_loops
from tests.support.ozw_process import REPO

pytestmark = pytest.mark.slow

# --- a worker killed during docker create -------------------------------------------------


def test_a_worker_killed_during_docker_create_leaves_no_secret_on_disk(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    secret = f"ozw-secret-{uuid.uuid4().hex}"
    creating = tmp_path / "creating"
    # `docker create` is `docker system dial-stdio`: hold it there, the request unread.
    wrapper_docker(
        tmp_path,
        f'if [ "$*" = "system dial-stdio" ]; then echo $$ > {creating}; exec sleep 300; fi',
    )
    task = tmp_path / "task.json"
    task.write_text(
        json.dumps(
            {
                "task_id": "killed-in-create",
                "task": {"id": "killed-in-create"},
                "docker_image": images.task,
                "sidecar_image": images.agent,
                "env_vars": {"TOKEN": secret},
            }
        )
    )
    env = {
        **{k: v for k, v in engine.env.items() if not k.startswith("WARP_")},
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
    }
    started = time.time()
    worker = subprocess.Popen(
        [sys.executable, "-m", "ozw", "smoke", "--config", "config/examples/docker.toml",
         "--task", str(task)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not creating.exists() or not creating.read_text().strip():  # no event here
            assert worker.poll() is None, "the worker ended before docker create"
            assert time.monotonic() < deadline, "docker create never started"
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)  # the worker alone: a crash
        worker.wait(timeout=30)
        assert files_containing(Path(tempfile.gettempdir()), secret, started) == []
        assert files_containing(REPO, secret, started) == []
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=30)
        if creating.exists() and (held := creating.read_text().strip()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(held), signal.SIGKILL)  # the CLI child the crash left


# --- a Docker daemon restarted while a task runs ------------------------------------------


@pytest.fixture(scope="module")
def restartable(request: pytest.FixtureRequest) -> Iterator[tuple[PrivateDockerd, Engine, Images]]:
    """A private dockerd of this module's own (restarting the session's would disturb
    other tests), with the task and agent images; its log is kept if a test failed."""
    failed_before = request.session.testsfailed
    try:
        daemon = PrivateDockerd()
        daemon.start()
    except NoEngine as exc:
        pytest.fail(f"no private Docker engine for the restart test: {exc}", pytrace=False)
    try:
        engine = Engine(daemon.host, private=True)
        prefix = f"ozwrestart-{uuid.uuid4().hex[:6]}"
        images = Images.named(prefix)  # only the task and agent images are imported
        import_image(engine, images.task, busybox_rootfs())
        import_image(engine, images.agent, _agent_rootfs())
        yield daemon, engine, images
    finally:
        daemon.remove(keep_log=request.session.testsfailed > failed_before)


async def _leftovers(engine: Engine, owned: str) -> list[str]:
    """The containers and volumes ``owned`` selects (a placeholder while the daemon is
    not answering)."""
    found: list[str] = []
    for args in (["ps", "--all", "--quiet", owned], ["volume", "ls", "--quiet", owned]):
        result = await anyio.run_process(["docker", *args], env=engine.env, check=False)
        found += result.stdout.decode().split() if result.returncode == 0 else ["(no daemon)"]
    return found


@on_both_loops
async def test_a_daemon_restart_fails_the_task_clearly_and_leaves_nothing(
    restartable: tuple[PrivateDockerd, Engine, Images],
) -> None:
    daemon, engine, images = restartable
    backend: DockerBackend = make_backend(engine)
    backend.reaper.sweep_interval = 0.5
    task_id = new_task_id("restart")
    params = make_params(
        task_id,
        images.task,
        sidecars=[agent(images), Sidecar(images.agent, "/rw", read_write=True)],
        env={"STANDIN_BEHAVIOUR": "sleep:300"},
    )
    captured = CapturedLog(task_id)
    outcome: list[ExecuteResult | TaskFailure] = []
    teardown_errors: list[str] = []
    done = anyio.Event()

    async def task() -> None:
        try:
            result, _ = await run_task(backend, params, captured, teardown_errors)
            outcome.append(result)
        finally:
            done.set()

    owned = f"--filter=label={LABEL_WORKER}={backend.worker_id}"
    async with backend, anyio.create_task_group() as tg:
        tg.start_soon(task)
        await captured.wait_for("standin: sleeping")
        await anyio.to_thread.run_sync(daemon.stop)
        with anyio.fail_after(60):
            await done.wait()
        await anyio.to_thread.run_sync(daemon.start)
        # The sweep removes what teardown could not, once the daemon answers again.
        with anyio.fail_after(60):
            while await _leftovers(engine, owned):  # noqa: ASYNC110 - no engine event
                await anyio.sleep(0.2)
        assert backend.reaper.sweeps >= 1
        # The spare engine connection opened while the daemon was down is dead: the
        # next task notices and opens a fresh one.
        assert backend.engines.has_spare
        after_id = new_task_id("after")
        after = backend.open_task(make_params(after_id, images.task, sidecars=[agent(images)]),
                                  CapturedLog(after_id).log)  # fmt: skip
        try:
            await after.setup()
            assert await after.execute() is ExecuteResult.COMPLETED
        finally:
            with anyio.CancelScope(shield=True):
                await after.teardown()
    assert len(outcome) == 1
    failure = outcome[0]
    assert isinstance(failure, TaskFailure), failure
    assert failure.reason is FailureReason.CONTAINER_WAIT
    assert failure.cause == "the Docker daemon stopped while the task ran"
    # A stopping daemon closes its socket first, then still answers on connections it
    # has: the container's removal may go through on the kept engine connection; the
    # read-write volume's (a CLI call) cannot.
    assert teardown_errors, "the daemon was down: teardown could not remove everything"
    assert "could not remove read-write sidecar volume" in teardown_errors[0]
    assert backend.live_containers == frozenset()
