"""The task Job, its Secret and the preflight Job: golden JSON and the merge rules."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ozw.backends.kubernetes.manifests import (
    SIDECAR_COPY_SCRIPT,
    WRAPPER_SCRIPT,
    effective_sidecars,
    pull_policy,
    secret_owner_patch,
    sidecar_problem,
    task_job,
    task_secret,
)
from ozw.backends.kubernetes.names import ANNOTATION_TASK_ID, LABEL_EXECUTION_HASH, label_hash
from ozw.tasks.params import Sidecar
from tests.kubernetes.manifest_cases import (
    EXECUTION_ID,
    SECRET_VALUES,
    TASK_ID,
    TEMPLATE,
    config,
    rendered,
    spec,
)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("OZW_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("name", sorted(rendered()))
def test_golden(name: str) -> None:
    text = json.dumps(rendered()[name], indent=2, sort_keys=True) + "\n"
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        path.write_text(text)
    assert path.read_text() == text, f"{name} differs from {path} (OZW_UPDATE_GOLDEN=1 rewrites)"


def _containers(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pod = job["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def test_no_secret_value_appears_in_the_job() -> None:
    for name, obj in rendered().items():
        if obj["kind"] == "Job":
            text = json.dumps(obj)
            for value in SECRET_VALUES:
                assert value not in text, name


def test_secret_holds_the_values_the_job_refers_to() -> None:
    task, settings = spec(), config(setup_command="true")
    job, secret = task_job(task, settings), task_secret(task, settings)
    data = secret["stringData"]
    assert set(SECRET_VALUES) <= set(data.values())
    for container in ("task", "setup"):
        for entry in _containers(job)[container]["env"]:
            if "valueFrom" in entry:
                ref = entry["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret["metadata"]["name"] == job["metadata"]["name"]
                assert ref["key"] in data
    env = {e["name"]: e for e in _containers(job)["task"]["env"]}
    assert env["weird name!"]["valueFrom"]["secretKeyRef"]["key"] == "env-2"
    assert data["env-2"] == SECRET_VALUES[1]


def test_fixed_variables_win_and_are_inline() -> None:
    task, settings = spec(), config()
    env = _containers(task_job(task, settings))["task"]["env"]
    names = [e["name"] for e in env]
    assert names.count("OZ_RUN_ID") == 1
    assert {"name": "OZ_RUN_ID", "value": TASK_ID} in env
    assert {"name": "OZ_WORKER_BACKEND", "value": "kubernetes"} in env
    assert names[-4:] == [
        "OZ_ENVIRONMENT_FILE",
        "OZ_WORKSPACE_ROOT",
        "OZ_WORKER_BACKEND",
        "OZ_RUN_ID",
    ]
    assert "OZ_RUN_ID" not in task_secret(task, settings)["stringData"]


def test_secret_is_owned_by_the_job_through_a_patch() -> None:
    patch = secret_owner_patch("oz-task-x-exec-y", "uid-1")
    (owner,) = patch["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "oz-task-x-exec-y",
        "uid": "uid-1",
        "blockOwnerDeletion": False,
        "controller": False,
    }


def test_job_shape() -> None:
    job = task_job(spec(), config(active_deadline_seconds=60))
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 60
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert job["metadata"]["annotations"][ANNOTATION_TASK_ID] == TASK_ID
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[LABEL_EXECUTION_HASH] == label_hash(EXECUTION_ID)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    task = _containers(job)["task"]
    assert task["command"] == ["/bin/sh", "-c", WRAPPER_SCRIPT, "oz-task"]
    assert task["args"] == list(spec().base_args)
    assert task["workingDir"] == "/workspace"
    assert task["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }


def test_ttl_is_omitted_without_cleanup_and_configurable() -> None:
    assert "ttlSecondsAfterFinished" not in task_job(spec(cleanup=False), config())["spec"]
    ttl = task_job(spec(), config(ttl_seconds_after_finished=60))["spec"]
    assert ttl["ttlSecondsAfterFinished"] == 60


def test_sidecars_are_copied_by_root_init_containers() -> None:
    containers = _containers(task_job(spec(), config()))
    copy = containers["copy-sidecar-0"]
    assert copy["image"] == "warp/agent:1"
    assert copy["securityContext"] == {"runAsUser": 0, "runAsGroup": 0}
    assert copy["command"] == ["/bin/sh", "-c", SIDECAR_COPY_SCRIPT]
    assert copy["volumeMounts"] == [{"name": "sidecar-0-data", "mountPath": "/target"}]
    mounts = {m["mountPath"]: m for m in containers["task"]["volumeMounts"]}
    assert mounts["/agent"]["readOnly"] is True
    assert mounts["/tools"]["readOnly"] is False


def test_copy_script_excludes_what_the_go_worker_excludes() -> None:
    for path in ("target", "proc", "sys", "dev", ".dockerenv", "var/run/secrets", "run/secrets"):
        assert f"--exclude=./{path} \\" in SIDECAR_COPY_SCRIPT
    assert SIDECAR_COPY_SCRIPT.endswith(
        "-C / -cf - . | tar --no-same-owner --no-same-permissions -C /target -xf -"
    )


def test_template_merge() -> None:
    job = task_job(spec(), config(pod_template=TEMPLATE, image_pull_policy="Never"))
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "oz-tasks"
    assert pod["nodeSelector"] == {"pool": "agents"}
    assert [c["name"] for c in pod["initContainers"]] == [
        "copy-sidecar-0",
        "copy-sidecar-1",
        "warm-cache",
    ]
    assert [v["name"] for v in pod["volumes"]][:2] == ["cache", "workspace"]
    assert [c["name"] for c in pod["containers"]] == ["task", "proxy"]
    task = pod["containers"][0]
    assert task["image"] == "ubuntu:22.04"
    assert task["imagePullPolicy"] == "Always"  # the template's own wins when it sets one
    assert task["volumeMounts"][0] == {"name": "cache", "mountPath": "/cache"}
    env = {e["name"]: e for e in task["env"]}
    assert env["FROM_TEMPLATE"] == {"name": "FROM_TEMPLATE", "value": "1"}
    assert env["OZ_RUN_ID"] == {"name": "OZ_RUN_ID", "value": TASK_ID}
    assert task["resources"]["requests"] == {
        "cpu": "2",
        "ephemeral-storage": "1Gi",
        "memory": "4Gi",
    }
    assert TEMPLATE["containers"][0]["image"] == "ignored:latest", "the template is not changed"


def test_template_without_task_container_gets_one_appended() -> None:
    template = {"containers": [{"name": "proxy", "image": "envoy"}]}
    pod = task_job(spec(), config(pod_template=template))["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["proxy", "task"]


def test_image_volumes() -> None:
    job = task_job(
        spec(sidecars=(Sidecar("warp/agent:1", "/agent"),)), config(use_image_volumes=True)
    )
    pod = job["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["volumes"][1] == {
        "name": "sidecar-0-image",
        "image": {"reference": "warp/agent:1", "pullPolicy": "IfNotPresent"},
    }


def test_setup_is_an_init_container_and_teardown_a_prestop_hook() -> None:
    containers = _containers(task_job(spec(), config(setup_command="make", teardown_command="rm")))
    setup = containers["setup"]
    assert setup["command"] == ["/bin/sh", "-c", "make"]
    assert setup["image"] == "ubuntu:22.04"
    assert setup["workingDir"] == "/workspace"
    assert [m["mountPath"] for m in setup["volumeMounts"]] == ["/workspace", "/agent", "/tools"]
    assert containers["task"]["lifecycle"] == {
        "preStop": {"exec": {"command": ["/bin/sh", "-c", "rm"]}}
    }


def test_fractional_shape() -> None:
    from ozw.tasks.params import Shape

    task = _containers(task_job(spec(instance_shape=Shape(0.5, 1.5)), config()))["task"]
    assert task["resources"]["limits"] == {"cpu": "500m", "memory": "1536Mi"}


def test_pull_policy_normalisation() -> None:
    assert [pull_policy(p) for p in ("Always", "Never", "IfNotPresent", "always", "")] == [
        "Always",
        "Never",
        "IfNotPresent",
        "IfNotPresent",
        "IfNotPresent",
    ]


@pytest.mark.parametrize(
    ("sidecars", "image_volumes", "problem"),
    [
        ((Sidecar("", "/x"),), False, "empty image"),
        ((Sidecar("a", ""),), False, "empty mount path"),
        ((Sidecar("a", "/workspace"),), False, "reserved path /workspace"),
        ((Sidecar("a", "/x"), Sidecar("b", "/x")), False, "share the mount path /x"),
        ((Sidecar("a", "/x", True),), True, "read-only"),
    ],
)
def test_sidecar_problems(sidecars: tuple[Sidecar, ...], image_volumes: bool, problem: str) -> None:
    found = sidecar_problem(sidecars, image_volumes)
    assert found is not None
    assert problem in found


def test_valid_sidecars_have_no_problem() -> None:
    assert sidecar_problem((Sidecar("a", "/x", True), Sidecar("b", "/y")), False) is None


def test_sidecar_image_and_coding_cli_overrides() -> None:
    settings = config(
        sidecar_image="mine/agent:2", coding_cli_sidecars={"claude": "mine/claude:1", "codex": "c"}
    )
    given = (Sidecar("warp/agent:1", "/agent"), Sidecar("warp/claude:9", "/mnt/claude-cli-sidecar"))
    assert effective_sidecars(given, "claude", settings) == (
        Sidecar("mine/agent:2", "/agent"),
        Sidecar("mine/claude:1", "/mnt/claude-cli-sidecar"),
    )
    assert effective_sidecars(given[:1], "codex", settings) == (
        Sidecar("mine/agent:2", "/agent"),
        Sidecar("c", "/mnt/codex-cli-sidecar"),
    )
    assert effective_sidecars(given, None, config()) == given
