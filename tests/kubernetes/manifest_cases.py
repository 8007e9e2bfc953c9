"""Representative manifests shared by the golden, secret and schema tests."""

from __future__ import annotations

from typing import Any

import attrs

from ozw.backends.kubernetes.manifests import (
    TaskJobSpec,
    preflight_job,
    task_job,
    task_secret,
)
from ozw.backends.kubernetes.names import job_name
from ozw.config import EnvEntry, KubernetesConfig
from ozw.tasks.params import Shape, Sidecar

TASK_ID = "019f5de4-bfd1-762e-92ed-199c971abcba"
EXECUTION_ID = "019f5df0-aaaa-bbbb-cccc-abcdef012345"
SECRET_VALUES = ("s3cr3t-token-value", "another-secret")

TEMPLATE: dict[str, Any] = {
    "serviceAccountName": "oz-tasks",
    "nodeSelector": {"pool": "agents"},
    "tolerations": [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
    "initContainers": [{"name": "warm-cache", "image": "busybox:1.36"}],
    "volumes": [{"name": "cache", "emptyDir": {}}],
    "containers": [
        {
            "name": "task",
            "image": "ignored:latest",
            "imagePullPolicy": "Always",
            "env": [{"name": "FROM_TEMPLATE", "value": "1"}, {"name": "OZ_RUN_ID", "value": "x"}],
            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            "resources": {"requests": {"cpu": "500m", "ephemeral-storage": "1Gi"}},
        },
        {"name": "proxy", "image": "envoyproxy/envoy:v1.30"},
    ],
}


def spec(**changes: Any) -> TaskJobSpec:
    base = TaskJobSpec(
        worker_id="Worker A",
        task_id=TASK_ID,
        execution_id=EXECUTION_ID,
        name=job_name(TASK_ID, EXECUTION_ID),
        image="ubuntu:22.04",
        base_args=("agent", "run", "--task-id", TASK_ID, "--sandboxed"),
        env={
            "TASK_ID": TASK_ID,
            "GITHUB_TOKEN": SECRET_VALUES[0],
            "weird name!": SECRET_VALUES[1],
            "OZ_RUN_ID": "spoofed",
        },
        sidecars=(Sidecar("warp/agent:1", "/agent"), Sidecar("warp/tools:2", "/tools", True)),
        instance_shape=Shape(vcpus=2, memory_gb=4),
    )
    return attrs.evolve(base, **changes)


def config(**changes: Any) -> KubernetesConfig:
    return KubernetesConfig(namespace="agents", **changes)


FULL_CONFIG: dict[str, Any] = {
    "setup_command": "./provision.sh",
    "teardown_command": "./cleanup.sh",
    "extra_labels": {"team": "infra"},
    "extra_annotations": {"owner": "platform"},
    "active_deadline_seconds": 7200,
    "workspace_size_limit": "20Gi",
    "environment": (EnvEntry("FOO", "bar"),),
}

CASES: dict[str, tuple[TaskJobSpec, KubernetesConfig]] = {
    "job-minimal": (spec(sidecars=(), instance_shape=None, env={"TASK_ID": TASK_ID}), config()),
    "job-full": (spec(), config(**FULL_CONFIG)),
    "job-template": (spec(), config(pod_template=TEMPLATE, image_pull_policy="Never")),
    "job-image-volumes": (
        spec(sidecars=(Sidecar("warp/agent:1", "/agent"),)),
        config(use_image_volumes=True),
    ),
    "job-no-cleanup": (spec(cleanup=False), config()),
}


def rendered() -> dict[str, dict[str, Any]]:
    """Every representative object by name: jobs, their secrets, preflight jobs."""
    objects: dict[str, dict[str, Any]] = {}
    for name, (task, settings) in CASES.items():
        objects[name] = task_job(task, settings)
        objects[name.replace("job-", "secret-")] = task_secret(task, settings)
    objects["preflight"] = preflight_job("oz-preflight-0123456789abcdef-1", "Worker A", config())
    objects["preflight-template"] = preflight_job(
        "oz-preflight-0123456789abcdef-2", "Worker A", config(pod_template=TEMPLATE)
    )
    objects["preflight-image-volumes"] = preflight_job(
        "oz-preflight-0123456789abcdef-3",
        "Worker A",
        config(use_image_volumes=True, preflight_resources={"limits": {"cpu": "1"}}),
    )
    return objects
