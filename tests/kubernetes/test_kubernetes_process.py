"""A real ``ozw`` process on the Kubernetes backend, against the fake API server.

The fake is a separate process speaking the real API (see test_fakeapi_kubectl.py);
the dispatch server is the project's own. Nothing in between is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ozw.backends.kubernetes.names import ANNOTATION_REPORTED, job_name
from ozw.dev.server import DispatchServer
from ozw.wire.codec import (
    TASK_STATE_CANCELLED,
    TaskAssignment,
    TaskCancellation,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
)
from tests.kubernetes.fake_cluster import FakeCluster, fake_cluster
from tests.support.ozw_process import OzwProcess
from tests.support.worker import assignment, start_server, terminal_for
from tests.support.worker_process import start_ozw, worker_env, write_worker_config

pytestmark = pytest.mark.slow

SECRET = "s3cr3t-value-never-in-a-job-spec"
JOBS = "/apis/batch/v1/namespaces/agents/jobs"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with fake_cluster(tmp_path) as running:
        yield running


def write_config(
    tmp_path: Path, port: int, cluster: FakeCluster, top: str = "", **extra: str
) -> Path:
    lines = "\n".join(f"{key} = {value}" for key, value in extra.items())
    backend = f'[backend.kubernetes]\nnamespace = "agents"\nkubeconfig = "{cluster.kubeconfig}"\n'
    return write_worker_config(
        tmp_path,
        port,
        worker_id="k8s-worker",
        top=f'shutdown_grace = "20s"\n{top}',
        backend=backend + lines,
    )


@contextlib.asynccontextmanager
async def scene(
    tmp_path: Path, cluster: FakeCluster, top: str = "", **extra: str
) -> AsyncIterator[tuple[DispatchServer, Callable[[], Awaitable[OzwProcess]]]]:
    """A dispatch server, and a way to start ``ozw`` processes configured for both
    (each started one has connected when ``start`` returns)."""
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        config = write_config(tmp_path, server.port or 0, cluster, top, **extra)

        async def start() -> OzwProcess:
            ozw = await start_ozw(nursery, config, worker_env(drop=("KUBE",)))
            with trio.fail_after(60):
                await server.wait_connected()
            return ozw

        yield server, start
        nursery.cancel_scope.cancel()


async def stop(ozw: OzwProcess) -> None:
    """SIGTERM, and a clean exit."""
    ozw.send_signal(signal.SIGTERM)
    assert await ozw.wait() == 0


async def hold(server: DispatchServer, ozw: OzwProcess, task_id: str) -> None:
    """Assign ``task_id`` to an agent that works until released; wait until it works."""
    await server.send(task(task_id, "fake/hold"))
    await ozw.wait_line(rf"task={task_id} \[agent\] fake agent: working")


async def kill_9(ozw: OzwProcess) -> int:
    """SIGKILL the worker's process group (a crash); its exit status."""
    assert ozw.process is not None
    os.killpg(ozw.process.pid, signal.SIGKILL)
    return await ozw.wait()


def task(task_id: str, image: str) -> TaskAssignment:
    found = assignment(task_id, docker_image=image)
    found.env_vars["GITHUB_TOKEN"] = SECRET
    return found


def job_of(cluster: FakeCluster, task_id: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = cluster.get(f"{JOBS}/{job_name(task_id, task_id)}")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    return found


async def test_story_of_a_task(cluster: FakeCluster, tmp_path: Path) -> None:
    """assign → Job → pod running → log lines relayed → Job complete → task_completed →
    Job deleted."""
    async with scene(tmp_path, cluster) as (server, start):
        ozw = await start()
        with trio.fail_after(60):
            await ozw.wait_line("kubernetes preflight Job .* passed")
            # The server assigns a task.
            await server.send(task("story-1", "fake/agent:1"))
            # The worker creates its Job, whose spec holds no secret value.
            await ozw.wait_line(r"task=story-1 Job oz-task-story-1-exec-story-1 created")
            spec = job_of(cluster, "story-1")
            assert spec is not None
            assert SECRET not in json.dumps(spec)
            # The pod runs; its log lines are relayed into the worker's log.
            await ozw.wait_line(r"task=story-1 \[agent\] fake agent: TASK_ID=story-1")
            await ozw.wait_line(r"task=story-1 \[agent\] fake agent: exiting 0")
            # The Job completes; the server hears task_completed.
            done = await server.wait_for(terminal_for("story-1"))
            assert isinstance(done, TaskCompleted)
            assert done.task_state != TASK_STATE_CANCELLED
            # The Job is deleted, its pod and Secret with it.
            await ozw.wait_line(r"task=story-1 Job oz-task-story-1-exec-story-1 deleted")
        assert job_of(cluster, "story-1") is None
        assert cluster.get("/api/v1/namespaces/agents/secrets")["items"] == []
        assert cluster.get("/api/v1/namespaces/agents/pods")["items"] == []
        assert server.messages_for("story-1")[0] == TaskClaimed("story-1", "k8s-worker")
        assert SECRET not in ozw.log
        await stop(ozw)


async def test_a_log_is_relayed_even_when_the_pod_watch_lags_the_jobs(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    cluster.control("pod-watch-lag", seconds="2")
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        ozw = await start()
        with trio.fail_after(60):
            await server.send(task("lagging", "fake/agent:1"))
            done = await server.wait_for(terminal_for("lagging"))
        assert isinstance(done, TaskCompleted)
        assert "task=lagging [agent] fake agent: TASK_ID=lagging" in ozw.log
        await stop(ozw)


async def test_a_failed_task_keeps_its_job_marked_reported(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        ozw = await start()
        with trio.fail_after(60):
            await server.send(task("fails", "fake/exit-3"))
            failed = await server.wait_for(terminal_for("fails"))
            await ozw.wait_line(r"task=fails Job .* kept \(failed\)")
        assert isinstance(failed, TaskFailed)
        assert failed.failure_reason == "container_exit"
        assert failed.exit_code == 3
        kept = job_of(cluster, "fails")
        assert kept is not None
        assert kept["metadata"]["annotations"][ANNOTATION_REPORTED] == "true"
        assert cluster.get("/api/v1/namespaces/agents/secrets")["items"] == []
        await stop(ozw)


async def test_cancellation_deletes_the_job(cluster: FakeCluster, tmp_path: Path) -> None:
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        ozw = await start()
        with trio.fail_after(60):
            await hold(server, ozw, "held")
            await server.send(TaskCancellation("held"))
            done = await server.wait_for(terminal_for("held"))
        assert isinstance(done, TaskCompleted)
        assert done.task_state == TASK_STATE_CANCELLED
        assert job_of(cluster, "held") is None
        deletes = [
            r for r in cluster.requests() if r["method"] == "DELETE" and "/jobs/" in r["path"]
        ]
        assert deletes[-1]["query"]["propagationPolicy"] == "Foreground"
        await stop(ozw)


async def test_task_timeout_deletes_the_job(cluster: FakeCluster, tmp_path: Path) -> None:
    async with scene(tmp_path, cluster, 'task_timeout = "2s"', preflight="false") as (
        server,
        start,
    ):
        ozw = await start()
        with trio.fail_after(60):
            await server.send(task("slow", "fake/hold"))
            failed = await server.wait_for(terminal_for("slow"))
        assert isinstance(failed, TaskFailed)
        assert failed.failure_reason == "task_timeout"
        assert job_of(cluster, "slow") is None
        await stop(ozw)


async def test_shutdown_leaves_the_job_running_and_reports_nothing(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        ozw = await start()
        with trio.fail_after(60):
            await hold(server, ozw, "lives-on")
            await stop(ozw)
        assert server.messages_for("lives-on") == [TaskClaimed("lives-on", "k8s-worker")]
        assert "left running for the next start" in ozw.log
        job = job_of(cluster, "lives-on")
        assert job is not None
        assert "deletionTimestamp" not in job["metadata"]


async def test_reattachment_after_sigkill(cluster: FakeCluster, tmp_path: Path) -> None:
    """The worker is killed mid-task; started again, it adopts the Job and reports it."""
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        first = await start()
        with trio.fail_after(60):
            await hold(server, first, "survivor")
            assert await kill_9(first) == -signal.SIGKILL
        assert server.messages_for("survivor") == [TaskClaimed("survivor", "k8s-worker")]
        assert job_of(cluster, "survivor") is not None
        second = await start()
        with trio.fail_after(60):
            await second.wait_line(r"found 1 Job\(s\) of an earlier run to reattach")
            await second.wait_line(
                r"task=survivor reattached to Job oz-task-survivor-exec-survivor"
            )
            cluster.control(f"release/agents/{job_name('survivor', 'survivor')}", exit="0")
            # Lines written since the restart are relayed.
            await second.wait_line(r"task=survivor \[agent\] fake agent: exiting 0")
            done = await server.wait_for(terminal_for("survivor"))
            await second.wait_line(r"task=survivor Job .* deleted")
        assert isinstance(done, TaskCompleted)
        claims = [m for m in server.messages_for("survivor") if isinstance(m, TaskClaimed)]
        assert len(claims) == 1, "an adopted task is not claimed again"
        assert second.log.count("fake agent: exiting 0") == 1
        assert job_of(cluster, "survivor") is None
        await stop(second)


async def test_a_finished_unreported_job_is_reported_at_start(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        first = await start()
        with trio.fail_after(60):
            await hold(server, first, "finished-alone")
            await kill_9(first)
            name = job_name("finished-alone", "finished-alone")
            cluster.control(f"release/agents/{name}", exit="4")
            # kubectl waits (a watch) until the Job has failed while no worker ran.
            await trio.to_thread.run_sync(
                lambda: cluster.kubectl("wait", "--for=condition=failed", f"job/{name}")
            )
            second = await start()
            failed = await server.wait_for(terminal_for("finished-alone"))
        assert isinstance(failed, TaskFailed)
        assert failed.failure_reason == "container_exit"
        assert failed.exit_code == 4
        await stop(second)
