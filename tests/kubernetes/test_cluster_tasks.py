"""A real ``ozw`` on the Kubernetes backend against the real control plane (etcd,
kube-apiserver, kube-controller-manager; tests/kubernetes/real/), as the deploy/
ServiceAccount with its Role: the Job controller runs the pods, the garbage collector
and the TTL controller remove what the worker leaves, RBAC decides what it may do.
The kubelet stand-in plays the node (images ``fake/...``: see its docstring)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from ozw.backends.kubernetes.names import ANNOTATION_REPORTED
from ozw.dev.server import DispatchServer
from ozw.wire.codec import (
    TASK_STATE_CANCELLED,
    TaskAssignment,
    TaskCancellation,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
)
from tests.kubernetes.real.control_plane import REPO
from tests.kubernetes.real.tenant import Tenant
from tests.support.ozw_command import run_ozw
from tests.support.ozw_process import OzwProcess
from tests.support.worker import API_KEY, assignment, start_server, terminal_for
from tests.support.worker_process import start_ozw, worker_env, write_worker_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SECRET = "s3cr3t-value-never-in-a-job-spec"


@contextlib.asynccontextmanager
async def scene(
    tmp_path: Path, cluster: Tenant, top: str = "", **extra: str
) -> AsyncIterator[tuple[DispatchServer, Callable[[], Awaitable[OzwProcess]]]]:
    """A dispatch server, and a way to start ``ozw`` processes on ``cluster`` (each
    has connected when ``start`` returns)."""
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        lines = "\n".join(f"{key} = {value}" for key, value in extra.items())
        config = write_worker_config(
            tmp_path,
            server.port or 0,
            worker_id="k8s-worker",
            top=f'shutdown_grace = "20s"\n{top}',
            backend=f'[backend.kubernetes]\nnamespace = "{cluster.name}"\n'
            f'kubeconfig = "{cluster.kubeconfig}"\n{lines}',
        )

        async def start() -> OzwProcess:
            ozw = await start_ozw(nursery, config, worker_env(drop=("KUBE",)))
            with trio.fail_after(60):
                await server.wait_connected()
            return ozw

        yield server, start
        nursery.cancel_scope.cancel()


def task(task_id: str, image: str) -> TaskAssignment:
    found = assignment(task_id, docker_image=image)
    found.env_vars["GITHUB_TOKEN"] = SECRET
    return found


async def stop(ozw: OzwProcess) -> None:
    ozw.send_signal(signal.SIGTERM)
    assert await ozw.wait() == 0


async def hold(server: DispatchServer, ozw: OzwProcess, task_id: str) -> None:
    """Assign ``task_id`` to an agent that works until released; wait until it works."""
    await server.send(task(task_id, "fake/hold"))
    await ozw.wait_line(rf"task={task_id} \[agent\] fake agent: working")


@contextlib.asynccontextmanager
async def ended(
    tmp_path: Path, cluster: Tenant, task_id: str, image: str, top: str = "", **extra: str
) -> AsyncIterator[TaskCompleted | TaskFailed]:
    """One ``ozw`` (configured with ``top`` and ``extra``, preflight off) runs ``task_id``
    in ``image``; the body sees its end, then the worker stops."""
    async with scene(tmp_path, cluster, top, preflight="false", **extra) as (server, start):
        ozw = await start()
        with trio.fail_after(60):
            await server.send(task(task_id, image))
            end = await server.wait_for(terminal_for(task_id))
        assert isinstance(end, TaskCompleted | TaskFailed)
        yield end
        await stop(ozw)


async def failed_under(
    tmp_path: Path, cluster: Tenant, task_id: str, image: str = "fake/agent:1", **extra: str
) -> TaskFailed:
    """How ``task_id`` (in ``image``) fails on a worker configured with ``extra``."""
    async with ended(tmp_path, cluster, task_id, image, **extra) as end:
        assert isinstance(end, TaskFailed), end
    return end


async def until(what: str, probe: Callable[[], object], cluster: Tenant) -> None:
    await trio.to_thread.run_sync(lambda: cluster.plane.wait_for(what, probe))


async def test_story_of_a_task(cluster: Tenant, tmp_path: Path) -> None:
    """preflight → assign → Job → pod → log relayed → Job complete → task_completed →
    Job deleted, its pod and Secret collected by the garbage collector."""
    async with scene(tmp_path, cluster) as (server, start):
        ozw = await start()
        with trio.fail_after(90):
            await ozw.wait_line("kubernetes preflight Job .* passed")
            await server.send(task("story-1", "fake/agent:1"))
            await ozw.wait_line(r"task=story-1 Job oz-task-story-1-exec-story-1 created")
            job = cluster.job("story-1")
            assert job is not None
            assert SECRET not in json.dumps(job)
            # The value reached the container through the Secret (the stand-in read it).
            await ozw.wait_line(r"task=story-1 \[agent\] fake agent: TASK_ID=story-1")
            await ozw.wait_line(r"task=story-1 \[agent\] fake agent: exiting 0")
            done = await server.wait_for(terminal_for("story-1"))
            assert isinstance(done, TaskCompleted)
            assert done.task_state != TASK_STATE_CANCELLED
            await ozw.wait_line(r"task=story-1 Job oz-task-story-1-exec-story-1 deleted")
        assert cluster.job("story-1") is None
        await until("the pods to be collected", lambda: not cluster.items("pods"), cluster)
        await until("the Secret to be collected", lambda: not cluster.items("secrets"), cluster)
        assert server.messages_for("story-1")[0] == TaskClaimed("story-1", "k8s-worker")
        assert SECRET not in ozw.log
        await stop(ozw)


FAILURES = {
    "exit-3": ("fake/exit-3", "container_exit", 3),
    "oom": ("fake/oom", "container_oom", 137),
    "pull": ("fake/pull-error", "image_pull", None),
    "bad-image": ("fake/bad-image", "invalid_image", None),
    "evicted": ("fake/evicted", "evicted", None),
}


async def test_each_failure_class(cluster: Tenant, tmp_path: Path) -> None:
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        ozw = await start()
        with trio.fail_after(90):
            for task_id, (image, _, _) in FAILURES.items():
                await server.send(task(task_id, image))
            failed = {task_id: await server.wait_for(terminal_for(task_id)) for task_id in FAILURES}
        for task_id, (_, reason, code) in FAILURES.items():
            found = failed[task_id]
            assert isinstance(found, TaskFailed), task_id
            assert (found.failure_reason, found.exit_code) == (reason, code), task_id
        exited = failed["exit-3"]
        assert isinstance(exited, TaskFailed)
        assert "exited with code 3. Pod phase: Failed. Pod reason: Error" in exited.message
        # A pod that ended keeps its Job (for its TTL), marked reported; one that never
        # started is deleted with its Job.
        for task_id in ("exit-3", "oom", "evicted"):
            kept = cluster.job(task_id)
            assert kept is not None, task_id
            assert kept["metadata"]["annotations"][ANNOTATION_REPORTED] == "true"
        await until(
            "the Jobs of pods that never ran to go",
            lambda: cluster.job("pull") is None and cluster.job("bad-image") is None,
            cluster,
        )
        await until("the Secrets to go", lambda: not cluster.items("secrets"), cluster)
        await stop(ozw)


async def test_an_init_container_failure(cluster: Tenant, tmp_path: Path) -> None:
    template = '{initContainers = [{name = "prepare", image = "fake/exit-2"}]}'
    failed = await failed_under(tmp_path, cluster, "init", pod_template=template)
    assert (failed.failure_reason, failed.exit_code) == ("init_container", 2)


async def test_an_unschedulable_pod(cluster: Tenant, tmp_path: Path) -> None:
    template = '{nodeSelector = {"disktype" = "none"}}'
    failed = await failed_under(
        tmp_path, cluster, "nowhere", pod_template=template, unschedulable_timeout='"1s"'
    )
    assert failed.failure_reason == "unschedulable"
    assert "didn't match Pod's node affinity/selector" in failed.message
    await until("the Job to go", lambda: cluster.job("nowhere") is None, cluster)


async def test_a_volume_that_cannot_mount(cluster: Tenant, tmp_path: Path) -> None:
    template = '{volumes = [{name = "creds", secret = {secretName = "absent"}}]}'
    failed = await failed_under(tmp_path, cluster, "mount", pod_template=template)
    assert failed.failure_reason == "volume_mount"
    assert 'secret "absent" not found' in failed.message


async def test_a_pod_template_is_merged_and_accepted(cluster: Tenant, tmp_path: Path) -> None:
    """The operator's template (a native sidecar that exits, an extra container, a
    toleration, labels) goes through the real validation twice: the server-side
    dry-run of ``ozw check`` and the task's real Job; the sidecar's exit decides nothing."""
    template = (
        '{initContainers = [{name = "proxy", image = "fake/exit-1", restartPolicy = "Always"}],'
        ' containers = [{name = "helper", image = "fake/helper"},'
        ' {name = "task", env = [{name = "FROM_TEMPLATE", value = "yes"}]}],'
        ' tolerations = [{key = "dedicated", operator = "Exists", effect = "NoSchedule"}],'
        ' nodeSelector = {"kubernetes.io/os" = "linux"}}'
    )
    async with ended(tmp_path, cluster, "templated", "fake/agent:1", pod_template=template) as done:
        assert isinstance(done, TaskCompleted), getattr(done, "message", done)
    check = await trio.to_thread.run_sync(
        lambda: run_ozw(
            "check",
            "--config",
            str(tmp_path / "worker.toml"),
            cwd=REPO,
            env={"WARP_API_KEY": API_KEY},
            timeout=90,
        )
    )
    line = next(x for x in check.stdout.splitlines() if "backend kubernetes" in x)
    assert line.endswith("permissions ok, dry-run Job accepted"), line


async def test_cancellation_deletes_the_job(cluster: Tenant, tmp_path: Path) -> None:
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        ozw = await start()
        with trio.fail_after(60):
            await hold(server, ozw, "held")
            await server.send(TaskCancellation("held"))
            done = await server.wait_for(terminal_for("held"))
        assert isinstance(done, TaskCompleted)
        assert done.task_state == TASK_STATE_CANCELLED
        assert cluster.job("held") is None
        await until("the pod to be collected", lambda: not cluster.items("pods"), cluster)
        await until("the Secret to be collected", lambda: not cluster.items("secrets"), cluster)
        await stop(ozw)


async def test_task_timeout_deletes_the_job(cluster: Tenant, tmp_path: Path) -> None:
    async with ended(tmp_path, cluster, "slow", "fake/hold", 'task_timeout = "3s"') as failed:
        assert isinstance(failed, TaskFailed)
        assert failed.failure_reason == "task_timeout"
        assert cluster.job("slow") is None
        await until("the pod to be collected", lambda: not cluster.items("pods"), cluster)


async def test_a_failed_job_is_removed_by_the_ttl_controller(
    cluster: Tenant, tmp_path: Path
) -> None:
    async with ended(
        tmp_path, cluster, "expires", "fake/exit-5", ttl_seconds_after_finished="2"
    ) as failed:
        assert isinstance(failed, TaskFailed)
        assert cluster.job("expires") is not None
        await until(
            "the TTL controller to remove the Job", lambda: not cluster.items("jobs"), cluster
        )
        await until("its pod to be collected", lambda: not cluster.items("pods"), cluster)


async def kill_9(ozw: OzwProcess) -> int:
    assert ozw.process is not None
    os.killpg(ozw.process.pid, signal.SIGKILL)
    return await ozw.wait()


async def test_reattachment_after_sigkill(cluster: Tenant, tmp_path: Path) -> None:
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        first = await start()
        with trio.fail_after(60):
            await hold(server, first, "survivor")
            assert await kill_9(first) == -signal.SIGKILL
        assert cluster.job("survivor") is not None
        second = await start()
        with trio.fail_after(60):
            await second.wait_line(
                r"task=survivor reattached to Job oz-task-survivor-exec-survivor"
            )
            cluster.release("survivor", 0)
            await second.wait_line(r"task=survivor \[agent\] fake agent: exiting 0")
            done = await server.wait_for(terminal_for("survivor"))
            await second.wait_line(r"task=survivor Job .* deleted")
        assert isinstance(done, TaskCompleted)
        claims = [m for m in server.messages_for("survivor") if isinstance(m, TaskClaimed)]
        assert len(claims) == 1, "an adopted task is not claimed again"
        assert second.log.count("fake agent: exiting 0") == 1
        await stop(second)


async def test_watches_survive_an_etcd_compaction(cluster: Tenant, tmp_path: Path) -> None:
    """etcd's history is compacted and the API server restarted: the worker's watches
    reopen from a version that is gone (410), list afresh and still see the end."""
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        ozw = await start()
        with trio.move_on_after(120) as waited:
            await hold(server, ozw, "compacted")
            # A change the worker's watches have not seen, then history gone.
            other = cluster.plane
            await trio.to_thread.run_sync(
                lambda: other.kubectl("-n", cluster.name, "create", "configmap", "unseen")
            )
            await trio.to_thread.run_sync(other.compact_etcd)
            await trio.to_thread.run_sync(other.restart_apiserver)
            await ozw.wait_line(r"watch: version \d+ is gone, listing afresh")
            await trio.to_thread.run_sync(lambda: cluster.release("compacted", 0))
            done = await server.wait_for(terminal_for("compacted"))
        assert not waited.cancelled_caught, ozw.log
        assert isinstance(done, TaskCompleted)
        await stop(ozw)


async def test_shutdown_leaves_the_job_running_and_reports_nothing(
    cluster: Tenant, tmp_path: Path
) -> None:
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        ozw = await start()
        with trio.fail_after(60):
            await hold(server, ozw, "lives-on")
            await stop(ozw)
        assert server.messages_for("lives-on") == [TaskClaimed("lives-on", "k8s-worker")]
        assert "left running for the next start" in ozw.log
        job = cluster.job("lives-on")
        assert job is not None
        assert "deletionTimestamp" not in job["metadata"]


async def test_a_finished_unreported_job_is_reported_at_start(
    cluster: Tenant, tmp_path: Path
) -> None:
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        first = await start()
        with trio.fail_after(60):
            await hold(server, first, "finished-alone")
            await kill_9(first)
            cluster.release("finished-alone", 4)
            # The Job controller marks it failed while no worker runs.
            await until(
                "the Job to fail",
                lambda: any(
                    c["type"] == "Failed" and c["status"] == "True"
                    for c in ((cluster.job("finished-alone") or {}).get("status") or {}).get(
                        "conditions", []
                    )
                ),
                cluster,
            )
            second = await start()
            failed = await server.wait_for(terminal_for("finished-alone"))
        assert isinstance(failed, TaskFailed)
        assert (failed.failure_reason, failed.exit_code) == ("container_exit", 4)
        await stop(second)


async def test_an_active_deadline(cluster: Tenant, tmp_path: Path) -> None:
    """The Job controller fails the Job at its deadline and stops its pod."""
    failed = await failed_under(
        tmp_path, cluster, "overdue", "fake/hold", active_deadline_seconds="2"
    )
    assert failed.failure_reason == "active_deadline", failed.message


async def test_a_refused_log_stream_does_not_fail_the_task(cluster: Tenant, tmp_path: Path) -> None:
    """RBAC narrowed while the worker runs (``pods/log`` taken away): the API server
    answers the followed log with 403, and the task still ends as its Job does."""
    async with scene(tmp_path, cluster, preflight="false") as (server, start):
        ozw = await start()
        await trio.to_thread.run_sync(lambda: cluster.revoke("get", "pods/log"))
        with trio.fail_after(60):
            await server.send(task("unlogged", "fake/agent:1"))
            done = await server.wait_for(terminal_for("unlogged"))
        assert isinstance(done, TaskCompleted), getattr(done, "message", done)
        assert "internal error" not in ozw.log
        await stop(ozw)
