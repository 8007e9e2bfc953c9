"""The backend contract against the fake API server, under Trio and under asyncio.

Backends use anyio only: each test runs once per event loop (tests/support/event_loops.py).
"""

from __future__ import annotations

import json
import logging
import stat
import sys
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest

from ozw.backends.base import ExecuteResult
from ozw.backends.kubernetes.backend import KubernetesBackend
from ozw.backends.kubernetes.names import job_name
from ozw.config import KubernetesConfig
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.tasks.params import Sidecar, TaskParams
from ozw.telemetry.logs import TaskLog
from tests.kubernetes.fake_cluster import FakeCluster, fake_cluster, write_kubeconfig
from tests.support.event_loops import on_both_loops

JOBS = "/apis/batch/v1/namespaces/agents/jobs"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with fake_cluster(tmp_path) as running:
        yield running


def params(task_id: str, image: str, **extra: Any) -> TaskParams:
    values: dict[str, Any] = {
        "task_id": task_id,
        "run_id": task_id,
        "execution_id": f"{task_id}-exec",
        "env": {"TASK_ID": task_id, "API_TOKEN": "hidden"},
        "image": image,
        "sidecars": (Sidecar("warp/agent:1", "/agent"),),
        "base_args": ("agent", "run"),
        "harness": None,
        "environment_id": None,
        "server_root_url": None,
        "task": {},
    }
    values.update(extra)
    return TaskParams(**values)


def backend(cluster: FakeCluster, kubeconfig: Path | None = None) -> KubernetesBackend:
    config = KubernetesConfig(
        namespace="agents", kubeconfig=str(kubeconfig or cluster.kubeconfig), preflight=False
    )
    return KubernetesBackend(config, worker_id="contract", environ={})


@on_both_loops
async def test_a_task_completes_and_its_job_is_deleted(cluster: FakeCluster) -> None:
    async with backend(cluster) as kube:
        assert "permissions ok" in await kube.check()
        task = kube.open_task(params("ok", "fake/agent"), TaskLog("ok"))
        await task.setup()
        assert await task.execute() is ExecuteResult.COMPLETED
        await task.teardown()

    assert cluster.get(JOBS)["items"] == []


@on_both_loops
@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("fake/pull-error", FailureReason.IMAGE_PULL),
        ("fake/bad-image", FailureReason.INVALID_IMAGE),
        ("fake/oom", FailureReason.CONTAINER_OOM),
        ("fake/evicted", FailureReason.EVICTED),
        ("fake/mount-fail", FailureReason.VOLUME_MOUNT),
    ],
)
async def test_failures_are_classified(
    image: str, reason: FailureReason, cluster: FakeCluster
) -> None:
    async with backend(cluster) as kube:
        task = kube.open_task(params("bad", image), TaskLog("bad"))
        await task.setup()
        with pytest.raises(TaskFailure) as caught:
            await task.execute()
        assert caught.value.reason is reason
        await task.teardown()

    jobs = cluster.get(JOBS)["items"]
    if reason in (FailureReason.CONTAINER_OOM, FailureReason.EVICTED):
        assert len(jobs) == 1, "a failed pod's Job is kept for its TTL"
    else:
        assert jobs == [], "a Job whose pod cannot start is deleted"
    assert cluster.get("/api/v1/namespaces/agents/secrets")["items"] == []


@on_both_loops
async def test_an_unschedulable_pod_fails_after_its_timeout(cluster: FakeCluster) -> None:
    config = KubernetesConfig(
        namespace="agents",
        kubeconfig=str(cluster.kubeconfig),
        preflight=False,
        unschedulable_timeout=0.5,
    )
    async with KubernetesBackend(config, worker_id="contract", environ={}) as kube:
        task = kube.open_task(params("pending", "fake/unschedulable"), TaskLog("pending"))
        await task.setup()
        with pytest.raises(TaskFailure) as caught:
            await task.execute()
        assert caught.value.reason is FailureReason.UNSCHEDULABLE
        assert "0/3 nodes are available" in caught.value.cause


@on_both_loops
async def test_cancellation_deletes_the_job(cluster: FakeCluster) -> None:
    async with backend(cluster) as kube:
        task = kube.open_task(params("cancel-me", "fake/hold"), TaskLog("cancel-me"))
        await task.setup()
        with anyio.move_on_after(1.5):
            await task.execute()
        await task.teardown()

    assert cluster.get(JOBS)["items"] == []
    assert cluster.get("/api/v1/namespaces/agents/pods")["items"] == []


@on_both_loops
async def test_watches_survive_drops_and_410_gone(cluster: FakeCluster) -> None:
    async with backend(cluster) as kube:
        log = TaskLog("dropped")
        task = kube.open_task(params("dropped", "fake/hold"), log)
        await task.setup()
        result: list[ExecuteResult] = []

        async def execute() -> None:
            result.append(await task.execute())

        async with anyio.create_task_group() as group:
            group.start_soon(execute)
            # A watch of our own says when the pod runs.
            selector = "job-name=" + job_name("dropped", "dropped-exec")
            async with aclosing(kube.api().watch("Pod", labels=selector)) as pods:
                async for _, pod in pods:
                    if pod.get("status", {}).get("phase") == "Running":
                        break
            # The history is compacted and every watch dropped: reconnecting from the
            # last version seen is answered 410 Gone, and the watch lists afresh.
            await anyio.to_thread.run_sync(cluster.control, "compact")
            await anyio.to_thread.run_sync(cluster.control, "cut-watches")
            name = job_name("dropped", "dropped-exec")
            await anyio.to_thread.run_sync(
                lambda: cluster.control(f"release/agents/{name}", exit="0")
            )
        assert result == [ExecuteResult.COMPLETED]
        await task.teardown()

    watches = [r for r in cluster.requests() if r["query"].get("watch") == "true"]
    assert len(watches) > 2, "the watches were reopened"


@on_both_loops
async def test_exec_credentials_run_through_anyio(tmp_path: Path) -> None:
    plugin = tmp_path / "get-token"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": "from-plugin"},
    }
    plugin.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(credential))})\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    with fake_cluster(tmp_path / "locked", "--token", "from-plugin") as locked:
        kubeconfig = write_kubeconfig(
            tmp_path / "exec-kubeconfig",
            locked.url,
            "agents",
            {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                    "command": str(plugin),
                    "args": [],
                }
            },
        )

        async with backend(locked, kubeconfig) as kube:
            assert "permissions ok" in await kube.check()


class AgentLines(logging.Handler):
    """The agent lines relayed into one task's log; ``seen(text)`` waits for one."""

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.lines: list[str] = []
        self._wanted: dict[str, anyio.Event] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "task_id", None) == self.task_id and getattr(record, "stream", None):
            line = record.getMessage()
            self.lines.append(line)
            if line in self._wanted:
                self._wanted.pop(line).set()

    async def seen(self, line: str) -> None:
        if line not in self.lines:
            event = self._wanted.setdefault(line, anyio.Event())
            await event.wait()


@on_both_loops
async def test_a_log_stream_that_ends_while_the_agent_runs_is_followed_again(
    cluster: FakeCluster,
) -> None:
    relayed = AgentLines("resumed")
    task_logger = logging.getLogger("ozw.task")
    level = task_logger.level
    task_logger.setLevel(logging.INFO)
    task_logger.addHandler(relayed)
    name = job_name("resumed", "resumed-exec")
    try:
        async with backend(cluster) as kube:
            task = kube.open_task(params("resumed", "fake/hold"), TaskLog("resumed"))
            await task.setup()
            result: list[ExecuteResult] = []

            async def execute() -> None:
                result.append(await task.execute())

            with anyio.fail_after(60):
                async with anyio.create_task_group() as group:
                    group.start_soon(execute)
                    await relayed.seen("fake agent: working")
                    # Every followed log ends (a kubelet restart); the agent goes on.
                    await anyio.to_thread.run_sync(cluster.control, "cut-logs")
                    await anyio.to_thread.run_sync(
                        lambda: cluster.control(f"say/agents/{name}", line="after-the-cut")
                    )
                    await relayed.seen("after-the-cut")
                    await anyio.to_thread.run_sync(
                        lambda: cluster.control(f"release/agents/{name}", exit="0")
                    )
            await task.teardown()
    finally:
        task_logger.removeHandler(relayed)
        task_logger.setLevel(level)
    assert result == [ExecuteResult.COMPLETED]
    assert relayed.lines.count("after-the-cut") == 1
    assert relayed.lines[-1] == "fake agent: exiting 0"
    follows = [
        r for r in cluster.requests() if r["path"].endswith("/log") and r["query"].get("follow")
    ]
    assert len(follows) >= 2, "the log was followed again"
    assert "sinceSeconds" in follows[-1]["query"], "from just before its last line"
