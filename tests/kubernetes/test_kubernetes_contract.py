"""The backend contract on the real control plane (tests/kubernetes/real/), under Trio
and under asyncio, as the deploy/ ServiceAccount of a fresh namespace.

Backends use anyio only: each test runs once per event loop (tests/support/event_loops.py).
The kubelet stand-in plays the node (images ``fake/...``: see its docstring).
"""

from __future__ import annotations

import json
import logging
import re
import stat
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
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
from tests.kubernetes.real.tenant import Tenant
from tests.support.event_loops import on_both_loops

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def params(task_id: str, image: str) -> TaskParams:
    return TaskParams(
        task_id=task_id,
        run_id=task_id,
        execution_id=task_id,
        env={"TASK_ID": task_id, "API_TOKEN": "hidden"},
        image=image,
        sidecars=(Sidecar("warp/agent:1", "/agent"),),
        base_args=("agent", "run"),
        harness=None,
        environment_id=None,
        server_root_url=None,
        task={},
    )


def backend(cluster: Tenant, kubeconfig: Path | None = None, **extra: Any) -> KubernetesBackend:
    config = KubernetesConfig(
        namespace=cluster.name,
        kubeconfig=str(kubeconfig or cluster.kubeconfig),
        preflight=False,
        **extra,
    )
    return KubernetesBackend(config, worker_id="contract", environ={})


async def gone(cluster: Tenant, resource: str) -> None:
    """Wait until the garbage collector removed the namespace's ``resource``."""
    await anyio.to_thread.run_sync(lambda: cluster.wait_gone(resource, f"the {resource} to go"))


@contextmanager
def attached(name: str, handler: logging.Handler) -> Iterator[None]:
    """``handler`` sees logger ``name``'s INFO records (and its children's) meanwhile."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.found.append(record.getMessage())


async def run_held(
    kube: KubernetesBackend, task_id: str, meanwhile: Callable[[], Awaitable[None]]
) -> None:
    """Run a ``fake/hold`` task to completion while ``meanwhile`` (which ends by
    releasing it) runs."""
    task = kube.open_task(params(task_id, "fake/hold"), TaskLog(task_id))
    await task.setup()
    result: list[ExecuteResult] = []

    async def execute() -> None:
        result.append(await task.execute())

    with anyio.fail_after(120):
        async with anyio.create_task_group() as group:
            group.start_soon(execute)
            await meanwhile()
    assert result == [ExecuteResult.COMPLETED]
    await task.teardown()


@on_both_loops
async def test_a_task_completes_and_its_job_is_deleted(cluster: Tenant) -> None:
    async with backend(cluster) as kube:
        assert "permissions ok" in await kube.check()
        task = kube.open_task(params("ok", "fake/agent"), TaskLog("ok"))
        await task.setup()
        assert await task.execute() is ExecuteResult.COMPLETED
        await task.teardown()

    assert cluster.items("jobs") == []
    await gone(cluster, "pods")


MISSING_VOLUME = {"volumes": [{"name": "creds", "secret": {"secretName": "absent"}}]}


@on_both_loops
@pytest.mark.parametrize(
    ("image", "template", "reason"),
    [
        ("fake/pull-error", None, FailureReason.IMAGE_PULL),
        ("fake/bad-image", None, FailureReason.INVALID_IMAGE),
        ("fake/oom", None, FailureReason.CONTAINER_OOM),
        ("fake/evicted", None, FailureReason.EVICTED),
        ("fake/agent", MISSING_VOLUME, FailureReason.VOLUME_MOUNT),
    ],
)
async def test_failures_are_classified(
    image: str, template: dict[str, Any] | None, reason: FailureReason, cluster: Tenant
) -> None:
    async with backend(cluster, pod_template=template) as kube:
        task = kube.open_task(params("bad", image), TaskLog("bad"))
        await task.setup()
        with pytest.raises(TaskFailure) as caught:
            await task.execute()
        assert caught.value.reason is reason
        await task.teardown()

    jobs = cluster.items("jobs")
    if reason in (FailureReason.CONTAINER_OOM, FailureReason.EVICTED):
        assert len(jobs) == 1, "a failed pod's Job is kept for its TTL"
    else:
        assert jobs == [], "a Job whose pod cannot start is deleted"
    assert cluster.items("secrets") == []


@on_both_loops
async def test_an_unschedulable_pod_fails_after_its_timeout(cluster: Tenant) -> None:
    nowhere = {"nodeSelector": {"disktype": "none"}}
    async with backend(cluster, pod_template=nowhere, unschedulable_timeout=0.5) as kube:
        task = kube.open_task(params("pending", "fake/agent"), TaskLog("pending"))
        await task.setup()
        with pytest.raises(TaskFailure) as caught:
            await task.execute()
        assert caught.value.reason is FailureReason.UNSCHEDULABLE
        assert "didn't match Pod's node affinity/selector" in caught.value.cause
        await task.teardown()


@on_both_loops
async def test_cancellation_deletes_the_job(cluster: Tenant) -> None:
    async with backend(cluster) as kube:
        task = kube.open_task(params("cancel-me", "fake/hold"), TaskLog("cancel-me"))
        await task.setup()
        with anyio.move_on_after(1.5):
            await task.execute()
        await task.teardown()

    assert cluster.items("jobs") == []
    await gone(cluster, "pods")


@on_both_loops
async def test_watches_survive_a_restart_and_410_gone(cluster: Tenant) -> None:
    plane = cluster.plane
    logged = Messages()
    with attached("ozw.backends.kubernetes.client", logged):
        async with backend(cluster) as kube:

            async def meanwhile() -> None:
                # A watch of our own says when the pod runs.
                selector = "job-name=" + job_name("dropped", "dropped")
                async with aclosing(kube.api().watch("Pod", labels=selector)) as pods:
                    async for _, pod in pods:
                        if pod.get("status", {}).get("phase") == "Running":
                            break
                # A change the watches have not seen, the history compacted, every watch
                # dropped: reopening from the last version seen is answered 410 Gone, and
                # the watch lists afresh.
                await anyio.to_thread.run_sync(
                    lambda: plane.kubectl("-n", cluster.name, "create", "configmap", "unseen")
                )
                await anyio.to_thread.run_sync(plane.compact_etcd)
                await anyio.to_thread.run_sync(plane.restart_apiserver)
                await anyio.to_thread.run_sync(lambda: cluster.release("dropped", 0))

            await run_held(kube, "dropped", meanwhile)

    afresh = [line for line in logged.found if re.search(r"watch: version \d+ is gone", line)]
    assert afresh, logged.found


@on_both_loops
async def test_exec_credentials_run_through_anyio(cluster: Tenant, tmp_path: Path) -> None:
    """The token comes only from an exec plugin (run by lightkube through anyio)."""
    config = json.loads(cluster.kubeconfig.read_text())
    (user,) = config["users"]
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": user["user"].pop("token")},
    }
    plugin = tmp_path / "get-token"
    plugin.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(credential))})\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    user["user"]["exec"] = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": str(plugin),
        "args": [],
    }
    kubeconfig = tmp_path / "exec-kubeconfig"
    kubeconfig.write_text(json.dumps(config))

    async with backend(cluster, kubeconfig) as kube:
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
    cluster: Tenant,
) -> None:
    relayed = AgentLines("resumed")
    pods: list[dict[str, Any]] = []
    with attached("ozw.task", relayed):
        async with backend(cluster) as kube:

            async def meanwhile() -> None:
                await relayed.seen("fake agent: working")
                pods.extend(await anyio.to_thread.run_sync(cluster.pods_of, "resumed"))
                # The API server restarts: every followed log ends; the agent goes on.
                await anyio.to_thread.run_sync(cluster.plane.restart_apiserver)
                await anyio.to_thread.run_sync(lambda: cluster.say("resumed", "after-the-restart"))
                await relayed.seen("after-the-restart")
                await anyio.to_thread.run_sync(lambda: cluster.release("resumed", 0))

            await run_held(kube, "resumed", meanwhile)
    assert relayed.lines.count("after-the-restart") == 1
    assert relayed.lines[-1] == "fake agent: exiting 0"
    # The kubelet stand-in logs each log request the API server passes on to it.
    (pod,) = pods
    path = f"/containerLogs/{cluster.name}/{pod['metadata']['name']}/task?"
    follows = [
        line
        for line in cluster.plane.logs()["kubelet"].read_text().splitlines()
        if path in line and "follow=true" in line
    ]
    assert len(follows) >= 2, "the log was followed again"
    assert "sinceSeconds=" in follows[-1], "from just before its last line"
