"""Start-up checks against the cluster: permissions and the preflight Job.

- :func:`access_problems`: one ``SelfSubjectAccessReview`` per verb the backend uses,
  so ``ozw check`` names every missing permission in one line.
- :func:`run_preflight`: the Go worker's preflight Job (docs/protocol.md): it proves
  that a Job of this shape can get its pod (a root init container for sidecar
  copies, or an image volume) before any task fails on it. Always deleted.
"""

from __future__ import annotations

import logging
from typing import Final

import anyio

from ozw.backends.execution import cleanup_bound
from ozw.backends.kubernetes.client import API_PROBLEMS, KubeApi, problem_text
from ozw.backends.kubernetes.manifests import preflight_job
from ozw.backends.kubernetes.names import preflight_job_name
from ozw.backends.kubernetes.rules import classify_pod, job_complete, preflight_failure
from ozw.config import KubernetesConfig
from ozw.tasks.failures import BackendUnavailable

logger = logging.getLogger(__name__)

PERMISSIONS: Final = (
    # (verb, resource, group, subresource): what the backend calls, and nothing more.
    ("create", "jobs", "batch", ""),
    ("get", "jobs", "batch", ""),
    ("list", "jobs", "batch", ""),
    ("watch", "jobs", "batch", ""),
    ("patch", "jobs", "batch", ""),
    ("delete", "jobs", "batch", ""),
    ("get", "pods", "", ""),
    ("list", "pods", "", ""),
    ("watch", "pods", "", ""),
    ("get", "pods", "", "log"),
    ("list", "events", "", ""),
    ("create", "secrets", "", ""),
    ("patch", "secrets", "", ""),
    ("delete", "secrets", "", ""),
)
PREFLIGHT_TIMEOUT: Final = 15.0
PREFLIGHT_POLL: Final = 0.5


async def access_problems(api: KubeApi) -> list[str]:
    """The permissions the backend lacks, as ``verb resource[/subresource]``."""
    missing = []
    for verb, resource, group, subresource in PERMISSIONS:
        if not await api.can_i(verb, resource, group, subresource):
            missing.append(f"{verb} {resource}" + (f"/{subresource}" if subresource else ""))
    return missing


def _guidance(config: KubernetesConfig) -> str:
    if config.use_image_volumes:
        return (
            "task Jobs mount sidecars as image volumes: check the service account's RBAC, "
            "Pod Security or admission policy, and image-volume support of the cluster "
            f"for namespace {config.namespace}"
        )
    return (
        "task Jobs copy sidecars with a root init container: check the service account's "
        f"RBAC and the Pod Security or admission policy of namespace {config.namespace}"
    )


async def run_preflight(api: KubeApi, worker_id: str, config: KubernetesConfig) -> None:
    """Create the preflight Job, wait for its pod (at most 15 s), delete it.

    Raises:
        BackendUnavailable: the Job or its pod could not be created, with guidance.
    """
    name = preflight_job_name(worker_id)
    try:
        job = await api.create(preflight_job(name, worker_id, config))
    except API_PROBLEMS as exc:
        raise BackendUnavailable(
            f"kubernetes preflight: could not create Job {name} ({problem_text(exc)}); "
            + _guidance(config)
        ) from None
    try:
        problem = await _wait(api, name, job["metadata"]["uid"], config)
    finally:
        with cleanup_bound(config.call_timeout):
            try:
                await api.delete_job(name)
            except API_PROBLEMS as exc:
                logger.warning("could not delete preflight Job %s: %s", name, problem_text(exc))
    if problem is not None:
        raise BackendUnavailable(f"kubernetes preflight: {problem}; {_guidance(config)}")
    logger.info("kubernetes preflight Job %s passed", name)


async def _wait(api: KubeApi, name: str, uid: str, config: KubernetesConfig) -> str | None:
    """None once the preflight passed, else what went wrong."""
    import datetime as dt

    with anyio.move_on_after(PREFLIGHT_TIMEOUT):
        while True:
            try:
                pods = await api.list_pods(f"job-name={name}")
                if pods and not config.use_image_volumes:
                    return None
                for pod in pods:
                    if pod.get("status", {}).get("phase") == "Succeeded":
                        return None
                    failure = classify_pod(pod, [], dt.datetime.now(dt.UTC), 0)
                    if failure is not None:
                        return f"the pod of Job {name} failed: {failure.cause}"
                if config.use_image_volumes:
                    job = await api.get_job(name)
                    if job is not None and job_complete(job):
                        return None
                refused = preflight_failure(await api.list_events(uid))
                if refused is not None:
                    return f"Job {name} could not create its pod: {refused}"
            except API_PROBLEMS as exc:
                return f"watching Job {name}: {problem_text(exc)}"
            await anyio.sleep(PREFLIGHT_POLL)
    return f"Job {name} created no pod within {PREFLIGHT_TIMEOUT:g}s"
