"""The objects the backend creates, as plain API JSON (docs/protocol.md), built purely.

- the task **Job** (backoffLimit 0, a pod of init containers for sidecars and setup
  plus the ``task`` container, merged into the operator's ``pod_template``);
- the task's **Secret**, holding every task environment value: the Job spec refers
  to it by ``secretKeyRef`` and holds no value, and it is owned by the Job
  (:func:`secret_owner_patch`) so Kubernetes collects it with the Job;
- the **preflight Job** run at start-up.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from ozw.backends.kubernetes import pod_template
from ozw.backends.kubernetes.names import task_annotations, task_labels, worker_labels
from ozw.config import KubernetesConfig
from ozw.config.kubernetes import DEFAULT_TTL_SECONDS
from ozw.tasks.params import AGENT_SIDECAR_MOUNT, Shape, Sidecar

WORKSPACE: Final = "/workspace"
"""The task's working directory, an emptyDir (``workspace_size_limit`` bounds it)."""
WORKSPACE_VOLUME: Final = "workspace"
ENVIRONMENT_FILE: Final = "/workspace/.oz-env"
"""Where ``setup_command`` writes variables for the agent (the wrapper script loads them)."""
SIDECAR_TARGET: Final = "/target"
"""Where a sidecar's copy container sees the emptyDir it fills."""
TASK_CONTAINER: Final = "task"
PREFLIGHT_IMAGE_MOUNT: Final = "/preflight-image"
PREFLIGHT_IMAGE_VOLUME: Final = "preflight-image"
BACKEND_NAME: Final = "kubernetes"

WRAPPER_SCRIPT: Final = "\n".join(
    [
        'if [ -f "$OZ_ENVIRONMENT_FILE" ]; then',
        "  set -a",
        '  . "$OZ_ENVIRONMENT_FILE"',
        "  set +a",
        "fi",
        "",
        'exec /agent/entrypoint.sh "$@"',
    ]
)
"""The task container's ``sh -c`` script: load what ``setup_command`` wrote, run the agent."""

SIDECAR_COPY_SCRIPT: Final = "\n".join(
    [
        "tar \\",
        *(
            f"  --exclude=./{path} \\"
            for path in ("target", "proc", "sys", "dev", ".dockerenv", "var/run/secrets")
        ),
        "  --exclude=./run/secrets \\",
        "  -C / -cf - . | tar --no-same-owner --no-same-permissions -C /target -xf -",
    ]
)
"""Copies a sidecar image's filesystem into its emptyDir (run as root in that image)."""

_SECRET_KEY: Final = re.compile(r"[-._a-zA-Z0-9]+")
_PULL_POLICIES: Final = ("Always", "Never", "IfNotPresent")


@attrs.frozen
class TaskJobSpec:
    """What one task's Job is made of, already decided (no I/O, no settings lookups)."""

    worker_id: str
    task_id: str
    execution_id: str
    name: str
    image: str
    base_args: tuple[str, ...]
    env: Mapping[str, str]
    """The task environment with the configured ``environment`` on top (values go to the Secret)."""
    sidecars: tuple[Sidecar, ...] = ()
    instance_shape: Shape | None = None
    cleanup: bool = True


def preflight_resources(config: KubernetesConfig) -> dict[str, Any]:
    """``preflight_resources``, else requests 10m/16Mi and limits 100m/64Mi."""
    if config.preflight_resources is not None:
        return copy.deepcopy(config.preflight_resources)
    return {
        "requests": {"cpu": "10m", "memory": "16Mi"},
        "limits": {"cpu": "100m", "memory": "64Mi"},
    }


def pull_policy(policy: str) -> str:
    """``Always``, ``Never`` or ``IfNotPresent``; anything else is ``IfNotPresent``."""
    return policy if policy in _PULL_POLICIES else "IfNotPresent"


def effective_sidecars(
    sidecars: Sequence[Sidecar], harness: str | None, config: KubernetesConfig
) -> tuple[Sidecar, ...]:
    """Apply ``sidecar_image`` (replaces the ``/agent`` sidecar) and ``coding_cli_sidecars``
    (replaces or adds ``/mnt/<harness>-cli-sidecar``) to the task's sidecars."""
    result = [
        attrs.evolve(s, image=config.sidecar_image)
        if config.sidecar_image and s.mount_path == AGENT_SIDECAR_MOUNT
        else s
        for s in sidecars
    ]
    harness = (harness or "").strip()
    image = config.coding_cli_sidecars.get(harness) if harness else None
    if image:
        mount = f"/mnt/{harness}-cli-sidecar"
        for index, sidecar in enumerate(result):
            if sidecar.mount_path == mount:
                result[index] = attrs.evolve(sidecar, image=image)
                break
        else:
            result.append(Sidecar(image, mount))
    return tuple(result)


def sidecar_problem(sidecars: Sequence[Sidecar], use_image_volumes: bool) -> str | None:
    """Why these sidecars cannot be mounted (``sidecar_prep``), or None."""
    seen: set[str] = set()
    for sidecar in sidecars:
        if not sidecar.image:
            return "a sidecar has an empty image"
        if not sidecar.mount_path:
            return f"sidecar {sidecar.image} has an empty mount path"
        if sidecar.mount_path == WORKSPACE:
            return f"sidecar {sidecar.image} cannot mount at the reserved path {WORKSPACE}"
        if sidecar.mount_path in seen:
            return f"two sidecars share the mount path {sidecar.mount_path}"
        if use_image_volumes and sidecar.read_write:
            return (
                f"sidecar {sidecar.image} asks for a read-write mount, "
                "but Kubernetes image volumes are read-only"
            )
        seen.add(sidecar.mount_path)
    return None


def secret_keys(names: Sequence[str]) -> dict[str, str]:
    """The Secret key of each variable: its name when that is a valid key, else ``env-<i>``."""
    return {
        name: name if _SECRET_KEY.fullmatch(name) else f"env-{index}"
        for index, name in enumerate(names)
    }


def fixed_environment(task_id: str) -> dict[str, str]:
    """The variables the worker always sets on the task container; they win over the rest."""
    return {
        "OZ_ENVIRONMENT_FILE": ENVIRONMENT_FILE,
        "OZ_WORKSPACE_ROOT": WORKSPACE,
        "OZ_WORKER_BACKEND": BACKEND_NAME,
        "OZ_RUN_ID": task_id,
    }


def secret_values(spec: TaskJobSpec) -> dict[str, str]:
    """The Secret's data: every environment value the fixed variables do not override."""
    fixed = fixed_environment(spec.task_id)
    names = [name for name in spec.env if name not in fixed]
    keys = secret_keys(names)
    return {keys[name]: spec.env[name] for name in names}


def container_env(spec: TaskJobSpec) -> list[dict[str, Any]]:
    """The task (and setup) container's ``env``: Secret references, then fixed values."""
    fixed = fixed_environment(spec.task_id)
    names = [name for name in spec.env if name not in fixed]
    keys = secret_keys(names)
    env: list[dict[str, Any]] = [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": spec.name, "key": keys[name]}}}
        for name in names
    ]
    env.extend({"name": name, "value": value} for name, value in fixed.items())
    return env


def _root() -> dict[str, int]:
    return {"runAsUser": 0, "runAsGroup": 0}


def _workspace_volume(size_limit: str | None) -> dict[str, Any]:
    empty_dir: dict[str, Any] = {"sizeLimit": size_limit} if size_limit else {}
    return {"name": WORKSPACE_VOLUME, "emptyDir": empty_dir}


def _sidecar_parts(
    sidecars: Sequence[Sidecar], config: KubernetesConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, copy init containers, mounts) of the sidecars."""
    policy = pull_policy(config.image_pull_policy)
    volumes: list[dict[str, Any]] = []
    inits: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for index, sidecar in enumerate(sidecars):
        if config.use_image_volumes:
            name = f"sidecar-{index}-image"
            volumes.append(
                {"name": name, "image": {"reference": sidecar.image, "pullPolicy": policy}}
            )
            mounts.append({"name": name, "mountPath": sidecar.mount_path, "readOnly": True})
            continue
        name = f"sidecar-{index}-data"
        volumes.append({"name": name, "emptyDir": {}})
        inits.append(
            {
                "name": f"copy-sidecar-{index}",
                "image": sidecar.image,
                "imagePullPolicy": policy,
                "command": ["/bin/sh", "-c", SIDECAR_COPY_SCRIPT],
                "securityContext": _root(),
                "volumeMounts": [{"name": name, "mountPath": SIDECAR_TARGET}],
            }
        )
        mounts.append(
            {"name": name, "mountPath": sidecar.mount_path, "readOnly": not sidecar.read_write}
        )
    return volumes, inits, mounts


def task_container(
    spec: TaskJobSpec, config: KubernetesConfig, mounts: list[Any]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": TASK_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": pull_policy(config.image_pull_policy),
        "command": ["/bin/sh", "-c", WRAPPER_SCRIPT, "oz-task"],
        "args": list(spec.base_args),
        "env": container_env(spec),
        "workingDir": WORKSPACE,
        "volumeMounts": mounts,
    }
    if config.teardown_command:
        container["lifecycle"] = {
            "preStop": {"exec": {"command": ["/bin/sh", "-c", config.teardown_command]}}
        }
    if resources := pod_template.shape_resources(spec.instance_shape):
        container["resources"] = resources
    return container


def task_pod_spec(spec: TaskJobSpec, config: KubernetesConfig) -> dict[str, Any]:
    """The pod spec: the template's, with the worker's parts merged in."""
    pod = pod_template.pod_spec_template(config)
    sidecar_volumes, inits, sidecar_mounts = _sidecar_parts(spec.sidecars, config)
    workspace_mount = {"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE}
    mounts = [workspace_mount, *sidecar_mounts]
    if config.setup_command:
        inits.append(
            {
                "name": "setup",
                "image": spec.image,
                "imagePullPolicy": pull_policy(config.image_pull_policy),
                "command": ["/bin/sh", "-c", config.setup_command],
                "workingDir": WORKSPACE,
                "env": container_env(spec),
                "volumeMounts": copy.deepcopy(mounts),
            }
        )
    ours = task_container(spec, config, mounts)
    pod["restartPolicy"] = "Never"
    pod["initContainers"] = [*inits, *pod.get("initContainers", [])]
    if not pod["initContainers"]:
        del pod["initContainers"]
    pod["volumes"] = [
        *pod.get("volumes", []),
        _workspace_volume(config.workspace_size_limit),
        *sidecar_volumes,
    ]
    containers = pod.get("containers", [])
    for index, container in enumerate(containers):
        if container.get("name") == TASK_CONTAINER:
            containers[index] = pod_template.overlay_task_container(container, ours)
            break
    else:
        containers.append(ours)
    pod["containers"] = containers
    return pod


def task_job(spec: TaskJobSpec, config: KubernetesConfig) -> dict[str, Any]:
    """The task Job (docs/protocol.md, "kubernetes")."""
    labels = task_labels(spec.worker_id, spec.task_id, spec.execution_id, config.extra_labels)
    job_spec: dict[str, Any] = {"backoffLimit": 0}
    if config.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = config.active_deadline_seconds
    if spec.cleanup:
        ttl = config.ttl_seconds_after_finished
        job_spec["ttlSecondsAfterFinished"] = DEFAULT_TTL_SECONDS if ttl is None else ttl
    template_meta: dict[str, Any] = {"labels": dict(labels)}
    if config.extra_annotations:
        template_meta["annotations"] = dict(config.extra_annotations)
    job_spec["template"] = {"metadata": template_meta, "spec": task_pod_spec(spec, config)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": spec.name,
            "namespace": config.namespace,
            "labels": labels,
            "annotations": task_annotations(
                spec.task_id, spec.execution_id, config.extra_annotations
            ),
        },
        "spec": job_spec,
    }


def task_secret(spec: TaskJobSpec, config: KubernetesConfig) -> dict[str, Any]:
    """The task's Secret (same name as its Job), created before the Job."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": spec.name,
            "namespace": config.namespace,
            "labels": task_labels(
                spec.worker_id, spec.task_id, spec.execution_id, config.extra_labels
            ),
        },
        "type": "Opaque",
        "stringData": secret_values(spec),
    }


def secret_owner_patch(job_name: str, job_uid: str) -> dict[str, Any]:
    """A merge patch making the Job the Secret's owner (so it is collected with the Job)."""
    return {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job_name,
                    "uid": job_uid,
                    "blockOwnerDeletion": False,
                    "controller": False,
                }
            ]
        }
    }


def preflight_job(name: str, worker_id: str, config: KubernetesConfig) -> dict[str, Any]:
    """The start-up preflight Job (docs/protocol.md, "kubernetes")."""
    policy = pull_policy(config.image_pull_policy)
    resources = preflight_resources(config)
    image = config.preflight_image
    pod = pod_template.pod_spec_template(config)
    pod["restartPolicy"] = "Never"
    main: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": policy,
        "command": ["/bin/sh", "-c", "true"],
        "resources": resources,
    }
    pod.pop("initContainers", None)
    if config.use_image_volumes:
        pod["volumes"] = [
            *pod.get("volumes", []),
            {"name": PREFLIGHT_IMAGE_VOLUME, "image": {"reference": image, "pullPolicy": policy}},
        ]
        main["command"] = ["/bin/sh", "-c", f"test -d {PREFLIGHT_IMAGE_MOUNT}"]
        main["volumeMounts"] = [
            {"name": PREFLIGHT_IMAGE_VOLUME, "mountPath": PREFLIGHT_IMAGE_MOUNT, "readOnly": True}
        ]
    else:
        pod["initContainers"] = [
            {
                "name": "root-init-preflight",
                "image": image,
                "imagePullPolicy": policy,
                "command": ["/bin/sh", "-c", "true"],
                "securityContext": _root(),
                "resources": copy.deepcopy(resources),
            }
        ]
    pod["containers"] = [main]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": worker_labels(worker_id),
        },
        "spec": {"backoffLimit": 0, "template": {"spec": pod}},
    }
