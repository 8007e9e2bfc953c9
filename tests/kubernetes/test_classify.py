"""The failure table of docs/protocol.md as pod-status fixtures, one row per check; which
Jobs of an earlier run are adopted."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from ozw.backends.kubernetes.names import (
    ANNOTATION_EXECUTION_ID,
    ANNOTATION_REPORTED,
    ANNOTATION_TASK_ID,
)
from ozw.backends.kubernetes.rules import (
    adoptable_task,
    adopted_params,
    classify_job_failure,
    classify_pod,
    deadline_failure,
    job_complete,
    job_failed,
    needs_events,
    preflight_failure,
)
from ozw.tasks.failures import FailureReason

CREATED = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
LATER = CREATED + dt.timedelta(seconds=45)


def pod(
    phase: str = "Running",
    *,
    containers: list[dict[str, Any]] | None = None,
    inits: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    reason: str = "",
    message: str = "",
    sidecars: tuple[str, ...] = (),
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if containers is not None:
        status["containerStatuses"] = containers
    if inits is not None:
        status["initContainerStatuses"] = inits
    if conditions is not None:
        status["conditions"] = conditions
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    spec_inits = [{"name": n, "image": "x", "restartPolicy": "Always"} for n in sidecars]
    return {
        "metadata": {
            "name": "oz-task-r-exec-e-abcde",
            "namespace": "agents",
            "labels": {"job-name": "oz-task-r-exec-e"},
            "creationTimestamp": CREATED.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {"initContainers": spec_inits, "containers": [{"name": "task", "image": "x"}]},
        "status": status,
    }


def terminated(name: str, code: int, reason: str = "Error", signal: int = 0) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": code, "reason": reason}
    if signal:
        state["signal"] = signal
    return {"name": name, "state": {"terminated": state}}


def waiting(name: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"name": name, "state": {"waiting": {"reason": reason, "message": message}}}


UNSCHEDULABLE = [
    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
]
MOUNT_EVENT = {"reason": "FailedMount", "message": "MountVolume.SetUp failed for volume x"}

# (row, pod, events, expected reason, expected exit code)
TABLE: list[tuple[str, dict[str, Any], list[dict[str, Any]], FailureReason, int | None]] = [
    ("evicted by reason", pod("Failed", reason="Evicted"), [], FailureReason.EVICTED, None),
    (
        "evicted by message",
        pod("Failed", message="The node was low on resource: memory. Evicting"),
        [],
        FailureReason.EVICTED,
        None,
    ),
    (
        "init container exited non-zero",
        pod("Pending", inits=[terminated("setup", 3)]),
        [],
        FailureReason.INIT_CONTAINER,
        3,
    ),
    (
        "init container killed by a signal",
        pod("Pending", inits=[terminated("copy-sidecar-0", 137, signal=9)]),
        [],
        FailureReason.INIT_CONTAINER,
        137,
    ),
    (
        "init container image pull",
        pod("Pending", inits=[waiting("copy-sidecar-0", "ErrImagePull")]),
        [],
        FailureReason.IMAGE_PULL,
        None,
    ),
    (
        "init container config error",
        pod("Pending", inits=[waiting("setup", "CreateContainerConfigError")]),
        [],
        FailureReason.INIT_CONTAINER,
        None,
    ),
    (
        "image pull",
        pod("Pending", containers=[waiting("task", "ErrImagePull", "not found")]),
        [],
        FailureReason.IMAGE_PULL,
        None,
    ),
    (
        "image pull back-off",
        pod("Pending", containers=[waiting("task", "ImagePullBackOff")]),
        [],
        FailureReason.IMAGE_PULL,
        None,
    ),
    (
        "invalid image",
        pod("Pending", containers=[waiting("task", "InvalidImageName")]),
        [],
        FailureReason.INVALID_IMAGE,
        None,
    ),
    (
        "container config error",
        pod("Pending", containers=[waiting("task", "CreateContainerConfigError", "no secret")]),
        [],
        FailureReason.CONTAINER_CREATE,
        None,
    ),
    (
        "container create error",
        pod("Pending", containers=[waiting("task", "CreateContainerError")]),
        [],
        FailureReason.CONTAINER_CREATE,
        None,
    ),
    (
        "task container OOM",
        pod("Failed", containers=[terminated("task", 137, "OOMKilled")]),
        [],
        FailureReason.CONTAINER_OOM,
        137,
    ),
    (
        "task container exit",
        pod("Failed", containers=[terminated("task", 2)]),
        [],
        FailureReason.CONTAINER_EXIT,
        2,
    ),
    (
        "unschedulable past the timeout",
        pod("Pending", conditions=UNSCHEDULABLE),
        [],
        FailureReason.UNSCHEDULABLE,
        None,
    ),
    ("failed mount event", pod("Pending"), [MOUNT_EVENT], FailureReason.VOLUME_MOUNT, None),
    (
        "mount message only",
        pod("Pending"),
        [{"reason": "Other", "message": "MountVolume.SetUp failed for volume y"}],
        FailureReason.VOLUME_MOUNT,
        None,
    ),
    ("pod failed", pod("Failed"), [], FailureReason.JOB_FAILED, None),
    (
        "pod failed on its deadline",
        pod("Failed", reason="DeadlineExceeded", message="Pod was active too long"),
        [],
        FailureReason.ACTIVE_DEADLINE,
        None,
    ),
]


@pytest.mark.parametrize(
    ("row", "fixture", "events", "reason", "exit_code"), TABLE, ids=[row[0] for row in TABLE]
)
def test_failure_table(
    row: str,
    fixture: dict[str, Any],
    events: list[dict[str, Any]],
    reason: FailureReason,
    exit_code: int | None,
) -> None:
    failure = classify_pod(fixture, events, LATER, unschedulable_timeout=30)
    assert failure is not None, row
    assert failure.reason is reason
    assert failure.exit_code == exit_code
    assert "oz-task-r-exec-e-abcde" in failure.cause
    assert "\n" not in failure.cause


def test_order_eviction_first() -> None:
    fixture = pod("Failed", reason="Evicted", containers=[terminated("task", 137, "OOMKilled")])
    failure = classify_pod(fixture, [], LATER, 30)
    assert failure is not None
    assert failure.reason is FailureReason.EVICTED


def test_order_init_before_task_container() -> None:
    fixture = pod("Failed", inits=[terminated("setup", 1)], containers=[terminated("task", 2)])
    failure = classify_pod(fixture, [], LATER, 30)
    assert failure is not None
    assert failure.reason is FailureReason.INIT_CONTAINER


@pytest.mark.parametrize(
    "fixture",
    [
        pod("Pending"),
        pod("Running", containers=[{"name": "task", "state": {"running": {}}}]),
        pod("Succeeded", containers=[terminated("task", 0, "Completed")]),
        pod("Pending", containers=[waiting("task", "ContainerCreating")]),
    ],
    ids=["pending", "running", "succeeded", "creating"],
)
def test_healthy_pods_show_no_failure(fixture: dict[str, Any]) -> None:
    assert classify_pod(fixture, [], LATER, 30) is None


def test_restartable_sidecar_exit_is_ignored() -> None:
    fixture = pod("Running", inits=[terminated("zookeeper", 143)], sidecars=("zookeeper",))
    assert classify_pod(fixture, [], LATER, 30) is None


def test_restartable_sidecar_that_cannot_start_still_fails() -> None:
    fixture = pod("Pending", inits=[waiting("zookeeper", "ErrImagePull")], sidecars=("zookeeper",))
    failure = classify_pod(fixture, [], LATER, 30)
    assert failure is not None
    assert failure.reason is FailureReason.IMAGE_PULL


def test_unschedulable_waits_for_its_timeout() -> None:
    fixture = pod("Pending", conditions=UNSCHEDULABLE)
    soon = CREATED + dt.timedelta(seconds=29)
    assert classify_pod(fixture, [], soon, 30) is None
    assert classify_pod(fixture, [], LATER, 0) is None, "0 disables the check"
    failure = classify_pod(fixture, [], LATER, 30)
    assert failure is not None
    assert "0/3 nodes" in failure.cause


def test_sigterm_explains_itself() -> None:
    failure = classify_pod(pod("Failed", containers=[terminated("task", 143)]), [], LATER, 30)
    assert failure is not None
    assert failure.exit_code == 143
    assert "SIGTERM" in failure.cause


def test_events_are_listed_only_for_troubled_pods() -> None:
    assert needs_events(pod("Pending"))
    assert needs_events(pod("Failed"))
    assert not needs_events(pod("Running"))


def _job(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    condition = {"type": kind, "status": "True", "reason": reason, "message": message}
    return {"metadata": {"name": "j", "namespace": "agents"}, "status": {"conditions": [condition]}}


def test_job_conditions() -> None:
    assert job_complete(_job("Complete"))
    assert not job_failed(_job("Complete"))
    assert job_failed(_job("Failed"))
    assert not job_complete({"status": {}})
    suspended = _job("Complete")
    suspended["status"]["conditions"][0]["status"] = "False"
    assert not job_complete(suspended)


def test_job_failure_reasons() -> None:
    deadline = classify_job_failure(_job("Failed", "DeadlineExceeded", "Job was active longer"))
    assert deadline.reason is FailureReason.ACTIVE_DEADLINE
    plain = classify_job_failure(_job("Failed", "BackoffLimitExceeded", "has reached the limit"))
    assert plain.reason is FailureReason.JOB_FAILED
    assert "BackoffLimitExceeded" in plain.cause


def test_a_pod_stopped_at_its_jobs_deadline_fails_for_the_deadline() -> None:
    """The real Job controller sets ``FailureTarget`` (DeadlineExceeded), then deletes the
    pod; the kubelet's SIGTERM shows as exit 143 before the Job says ``Failed``."""
    stopped = pod("Failed", containers=[terminated("task", 143)])
    stopped["metadata"]["deletionTimestamp"] = "2026-12-01T12:00:30Z"
    target = _job("FailureTarget", "DeadlineExceeded", "Job was active longer than specified")
    found = deadline_failure(stopped, target)
    assert found is not None
    assert found.reason is FailureReason.ACTIVE_DEADLINE
    assert "Job reason: DeadlineExceeded" in found.cause
    # Not for a pod still there (its own exit), nor for another reason, nor without a Job.
    running = pod("Failed", containers=[terminated("task", 143)])
    assert deadline_failure(running, target) is None
    assert deadline_failure(stopped, _job("FailureTarget", "BackoffLimitExceeded")) is None
    assert deadline_failure(stopped, None) is None


def test_preflight_failure_from_events() -> None:
    forbidden = {
        "type": "Warning",
        "reason": "FailedCreate",
        "message": 'pods "x" is forbidden: violates PodSecurity "restricted"',
    }
    assert preflight_failure([{"type": "Normal", "reason": "SuccessfulCreate"}]) is None
    assert preflight_failure([forbidden]) == forbidden["message"]


def left_job(annotations: dict[str, str], *, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "oz-task-r-exec-e", "annotations": annotations}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T12:00:00Z"
    containers = [{"name": "setup", "image": "busybox"}, {"name": "task", "image": "img:1"}]
    return {"metadata": meta, "spec": {"template": {"spec": {"containers": containers}}}}


@pytest.mark.parametrize(
    ("job", "task_id"),
    [
        (left_job({ANNOTATION_TASK_ID: "t1"}), "t1"),
        (left_job({}), None),  # the preflight Job's: no task
        (left_job({ANNOTATION_TASK_ID: "t1"}, deleting=True), None),
        (left_job({ANNOTATION_TASK_ID: "t1", ANNOTATION_REPORTED: "true"}), None),
    ],
)
def test_which_jobs_of_an_earlier_run_are_adopted(job: dict[str, Any], task_id: str | None) -> None:
    assert adoptable_task(job) == task_id


def test_an_adopted_job_gives_its_task_and_image() -> None:
    params = adopted_params("t1", left_job({ANNOTATION_EXECUTION_ID: "e1"}))
    assert (params.task_id, params.execution_id, params.image) == ("t1", "e1", "img:1")
