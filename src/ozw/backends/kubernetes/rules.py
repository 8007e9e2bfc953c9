"""The pure rules of a task Job: why its pod or the Job failed (docs/protocol.md,
"Failure reasons"), and which Jobs of an earlier run are adopted.

The backend passes a pod (and, for a pending or failed pod, its events) as the API
server returned them, plus the current time; the classifiers return a
:class:`~ozw.tasks.failures.TaskFailure` or None (nothing wrong yet). The checks run in
the table's order, the first that matches wins.
"""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ozw.backends.kubernetes.names import (
    ANNOTATION_EXECUTION_ID,
    ANNOTATION_REPORTED,
    ANNOTATION_TASK_ID,
)
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.tasks.params import TaskParams

IMMEDIATE_WAITING: Final = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
"""Waiting reasons that will not resolve by themselves: the task fails at once."""

POD_ENDED: Final = frozenset(
    {
        FailureReason.CONTAINER_EXIT,
        FailureReason.CONTAINER_OOM,
        FailureReason.EVICTED,
        FailureReason.JOB_FAILED,
        FailureReason.ACTIVE_DEADLINE,
    }
)
"""Failures that mean the pod has ended (the Job fails with it)."""

Json = Mapping[str, Any]


def parse_time(text: str | None) -> dt.datetime | None:
    """An API timestamp (RFC 3339, ``Z``) as an aware datetime, or None."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def terminated_exit_code(terminated: Json) -> int:
    """A terminated container's exit code, 128+N for a signal."""
    if (sig := terminated.get("signal") or 0) > 0:
        return 128 + int(sig)
    return int(terminated.get("exitCode") or 0)


def pod_context(pod: Json) -> str:
    meta = pod.get("metadata", {})
    job = (meta.get("labels") or {}).get("job-name")
    where = f"namespace {meta.get('namespace', '?')}" + (f", job {job}" if job else "")
    return f"pod {meta.get('name', '?')} ({where})"


def _status_details(pod: Json, reason: str = "", message: str = "") -> list[str]:
    status = pod.get("status", {})
    details = []
    if phase := status.get("phase"):
        details.append(f"Pod phase: {phase}")
    if reason := reason or status.get("reason", ""):
        details.append(f"Pod reason: {reason}")
    if message := message or status.get("message", ""):
        details.append(f"Pod message: {message}")
    return details


def _terminated_cause(pod: Json, kind: str, name: str, terminated: Json) -> str:
    code = terminated_exit_code(terminated)
    text = f"{kind} {name} in {pod_context(pod)} exited with code {terminated.get('exitCode', 0)}"
    if code > 128:
        text += f" ({_signal_name(code - 128)})"
    parts = [
        text,
        *_status_details(pod, terminated.get("reason", ""), terminated.get("message", "")),
    ]
    if code == 128 + signal.SIGTERM:
        parts.append(
            "SIGTERM usually means Kubernetes asked the process to stop: check pod events "
            "for eviction, preemption, node drain, activeDeadlineSeconds or manual deletion"
        )
    return ". ".join(parts)


def _waiting_cause(pod: Json, kind: str, name: str, waiting: Json) -> str:
    reason = waiting.get("reason", "")
    what = f"{reason}: {waiting['message']}" if waiting.get("message") else reason
    return ". ".join(
        [f"{kind} {name} in {pod_context(pod)} is waiting: {what}", *_status_details(pod)]
    )


def waiting_reason(reason: str, init_container: bool) -> FailureReason:
    match reason:
        case "ErrImagePull" | "ImagePullBackOff":
            return FailureReason.IMAGE_PULL
        case "InvalidImageName":
            return FailureReason.INVALID_IMAGE
    return FailureReason.INIT_CONTAINER if init_container else FailureReason.CONTAINER_CREATE


def _restartable_inits(pod: Json) -> set[str]:
    """Init containers with ``restartPolicy: Always`` (native sidecars): their exit codes
    never decide a pod's outcome (they exit 143 when the pod winds down)."""
    return {
        c["name"]
        for c in pod.get("spec", {}).get("initContainers") or []
        if c.get("restartPolicy") == "Always"
    }


def _state(status: Json, key: str) -> Json | None:
    value = (status.get("state") or {}).get(key)
    return value if isinstance(value, Mapping) else None


def _status_failure(pod: Json, entry: Json, init: bool) -> TaskFailure | None:
    """The failure one container status shows (an init container's or a main one's)."""
    kind = "init container" if init else "container"
    name = entry.get("name", "?")
    terminated = _state(entry, "terminated")
    if terminated and terminated.get("exitCode"):
        if init:
            reason = FailureReason.INIT_CONTAINER
        elif terminated.get("reason") == "OOMKilled":
            reason = FailureReason.CONTAINER_OOM
        else:
            reason = FailureReason.CONTAINER_EXIT
        cause = _terminated_cause(pod, kind, name, terminated)
        return TaskFailure(reason, cause, terminated_exit_code(terminated))
    waiting = _state(entry, "waiting")
    if waiting and waiting.get("reason") in IMMEDIATE_WAITING:
        cause = _waiting_cause(pod, kind, name, waiting)
        return TaskFailure(waiting_reason(waiting["reason"], init), cause)
    return None


def _container_failure(pod: Json) -> TaskFailure | None:
    status = pod.get("status", {})
    sidecars = _restartable_inits(pod)
    for entry in status.get("initContainerStatuses") or []:
        if entry.get("name") in sidecars and _state(entry, "terminated"):
            continue  # a native sidecar's exit never decides the pod
        if (failure := _status_failure(pod, entry, True)) is not None:
            return failure
    for entry in status.get("containerStatuses") or []:
        if (failure := _status_failure(pod, entry, False)) is not None:
            return failure
    return None


def unschedulable_since(pod: Json) -> dt.datetime | None:
    """When an unschedulable pod was created (its clock for ``unschedulable_timeout``)."""
    for condition in pod.get("status", {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return parse_time(pod.get("metadata", {}).get("creationTimestamp"))
    return None


def _unschedulable(pod: Json, now: dt.datetime, timeout: float) -> TaskFailure | None:
    if timeout <= 0:
        return None
    for condition in pod.get("status", {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            created = parse_time(pod.get("metadata", {}).get("creationTimestamp"))
            if created is not None and (now - created).total_seconds() >= timeout:
                parts = [f"{pod_context(pod)} is unschedulable", "Pod reason: Unschedulable"]
                if condition.get("message"):
                    parts.append(f"Pod message: {condition['message']}")
                return TaskFailure(FailureReason.UNSCHEDULABLE, ". ".join(parts))
    return None


def _mount_failure(pod: Json, events: Sequence[Json]) -> TaskFailure | None:
    for event in events:
        message = event.get("message", "")
        if event.get("reason") == "FailedMount" or "MountVolume.SetUp failed" in message:
            parts = [f"{pod_context(pod)} failed to mount a volume"]
            if event.get("reason"):
                parts.append(f"Kubernetes event reason: {event['reason']}")
            if message:
                parts.append(f"Kubernetes event message: {message}")
            return TaskFailure(FailureReason.VOLUME_MOUNT, ". ".join(parts))
    return None


def needs_events(pod: Json) -> bool:
    """Whether the pod looks troubled enough to be worth listing its events."""
    return pod.get("status", {}).get("phase") in ("Pending", "Failed")


def classify_pod(
    pod: Json, events: Sequence[Json], now: dt.datetime, unschedulable_timeout: float
) -> TaskFailure | None:
    """The failure a pod shows (docs/protocol.md, "kubernetes"), or None."""
    status = pod.get("status", {})
    if status.get("reason") == "Evicted" or "evict" in status.get("message", "").lower():
        cause = ". ".join([f"{pod_context(pod)} was evicted", *_status_details(pod)])
        return TaskFailure(FailureReason.EVICTED, cause)
    failure = (
        _container_failure(pod)
        or _unschedulable(pod, now, unschedulable_timeout)
        or _mount_failure(pod, events)
    )
    if failure is not None:
        return failure
    if status.get("phase") == "Failed":
        detail = f"{status.get('reason', '')} {status.get('message', '')}".lower()
        reason = FailureReason.ACTIVE_DEADLINE if "deadline" in detail else FailureReason.JOB_FAILED
        return TaskFailure(reason, ". ".join([f"{pod_context(pod)} failed", *_status_details(pod)]))
    return None


def _condition(job: Json, kind: str) -> Json | None:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def job_complete(job: Json) -> bool:
    return _condition(job, "Complete") is not None


def job_failed(job: Json) -> bool:
    return _condition(job, "Failed") is not None


def job_finished(job: Json) -> bool:
    return job_complete(job) or job_failed(job)


def job_failing(job: Json) -> Json | None:
    """The Job's ``Failed`` condition, or the ``FailureTarget`` the Job controller sets
    first, before it stops the Job's pods."""
    return _condition(job, "Failed") or _condition(job, "FailureTarget")


def deadline_failure(pod: Json, job: Json | None) -> TaskFailure | None:
    """The deadline's failure when a terminating pod was stopped by its Job's
    ``activeDeadlineSeconds``: its container's exit (143) is the effect, not the cause."""
    if job is None or not pod.get("metadata", {}).get("deletionTimestamp"):
        return None
    condition = job_failing(job) or {}
    if "deadline" not in f"{condition.get('reason', '')} {condition.get('message', '')}".lower():
        return None
    return classify_job_failure(job)


def classify_job_failure(job: Json) -> TaskFailure:
    """A failed Job's failure when none of its pods explains it."""
    condition = job_failing(job) or {}
    meta = job.get("metadata", {})
    parts = [
        f"Kubernetes Job {meta.get('name', '?')} in namespace {meta.get('namespace', '?')} failed"
    ]
    if condition.get("reason"):
        parts.append(f"Job reason: {condition['reason']}")
    if condition.get("message"):
        parts.append(f"Job message: {condition['message']}")
    detail = f"{condition.get('reason', '')} {condition.get('message', '')}".lower()
    reason = FailureReason.ACTIVE_DEADLINE if "deadline" in detail else FailureReason.JOB_FAILED
    return TaskFailure(reason, ". ".join(parts))


def preflight_failure(events: Sequence[Json]) -> str | None:
    """The message of a Warning ``FailedCreate`` event of the preflight Job, or None."""
    for event in events:
        if event.get("type") == "Warning" and event.get("reason") == "FailedCreate":
            return str(event.get("message") or "").strip() or "FailedCreate"
    return None


def pod_ended(failure: TaskFailure) -> bool:
    """Whether a failure means the task's pod has ended (else the Job may still start one)."""
    return failure.exit_code is not None or failure.reason in POD_ENDED


def container_started(pod: Json, name: str) -> bool:
    """Whether container ``name`` of the pod runs or has run."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        if status.get("name") == name and ("running" in state or "terminated" in state):
            return True
    return False


def container_ended(pod: Json, name: str) -> bool:
    """Whether container ``name`` of the pod has terminated."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == name and "terminated" in (status.get("state") or {}):
            return True
    return False


def adoptable_task(job: Json) -> str | None:
    """The task id of a Job an earlier run left, when this run should adopt it: a task
    Job (the preflight's has no task id), not going away, its outcome not yet reported."""
    meta = job.get("metadata", {})
    annotations = meta.get("annotations") or {}
    if meta.get("deletionTimestamp") or annotations.get(ANNOTATION_REPORTED) == "true":
        return None
    task_id = annotations.get(ANNOTATION_TASK_ID)
    return task_id if isinstance(task_id, str) else None


def adopted_params(task_id: str, job: Json) -> TaskParams:
    """The parameters of an adopted Job's task, as far as the Job tells them."""
    annotations = job["metadata"].get("annotations") or {}
    containers = job["spec"]["template"]["spec"].get("containers", [])
    image = next((c.get("image", "") for c in containers if c["name"] == "task"), "")
    return TaskParams(
        task_id=task_id,
        run_id=task_id,
        execution_id=annotations.get(ANNOTATION_EXECUTION_ID),
        env={},
        image=image,
        sidecars=(),
        base_args=(),
        harness=None,
        environment_id=None,
        server_root_url=None,
        task={},
    )
