"""deploy/kubernetes renders with ``kubectl kustomize`` and is what the backend needs."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ozw.backends.kubernetes.preflight import PERMISSIONS
from ozw.config import CliOverrides, KubernetesConfig, load_config
from tests.kubernetes.real.control_plane import KUBECTL, REPO

VERSIONS = ("1.28.0", "1.31.0", "1.34.0", "1.37.0")


@functools.cache
def rendered() -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(REPO / "deploy" / "kubernetes")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def by_kind(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in rendered() if doc["kind"] == kind]
    return found


def test_it_renders_the_expected_objects() -> None:
    kinds = sorted(doc["kind"] for doc in rendered())
    assert kinds == ["ConfigMap", "Deployment", "Role", "RoleBinding", "ServiceAccount"]
    assert {doc["metadata"]["namespace"] for doc in rendered()} == {"oz-workers"}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_strictly(version: str) -> None:
    for doc in rendered():
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_role_grants_exactly_what_the_backend_uses() -> None:
    granted = set()
    for rule in by_kind("Role")["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((verb, resource, group))
    needed = {
        (verb, f"{resource}/{sub}" if sub else resource, group)
        for verb, resource, group, sub in PERMISSIONS
    }
    assert granted == needed


def _worker_toml(tmp_path: Path) -> Any:
    path = tmp_path / "worker.toml"
    path.write_text(by_kind("ConfigMap")["data"]["worker.toml"])
    return load_config(str(path), CliOverrides(), {"WARP_API_KEY": "x"})


def test_the_configmap_is_a_valid_kubernetes_worker_config(tmp_path: Path) -> None:
    config = _worker_toml(tmp_path)
    assert isinstance(config.backend, KubernetesConfig)
    assert config.backend.namespace == by_kind("Role")["metadata"]["namespace"]
    assert config.backend.kubeconfig is None, "in-cluster"
    assert config.metrics_addr == ":9090"
    assert config.backend.active_deadline_seconds == 28800  # the Go chart's 8 hours


def test_the_deployment(tmp_path: Path) -> None:
    deployment = by_kind("Deployment")
    spec = deployment["spec"]
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["replicas"] == 1
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == by_kind("ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    config = _worker_toml(tmp_path)
    assert pod["terminationGracePeriodSeconds"] > config.shutdown_grace
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    (port,) = [p for p in container["ports"] if p["name"] == probe["port"]]
    assert port["containerPort"] == int(config.metrics_addr.rpartition(":")[2])
    (api_key,) = [e for e in container["env"] if e["name"] == "WARP_API_KEY"]
    assert "secretKeyRef" in api_key["valueFrom"]
    assert container["args"] == ["--config", "/etc/ozw/worker.toml"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    (config_volume,) = [v for v in pod["volumes"] if v["name"] == mounts["/etc/ozw"]["name"]]
    assert config_volume["configMap"]["name"] == by_kind("ConfigMap")["metadata"]["name"]
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
