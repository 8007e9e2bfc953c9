"""``ozw check`` and start-up on the real control plane, as the deploy/ ServiceAccount:
RBAC, admission and the Job controller decide, not a reading of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.kubernetes.real.control_plane import REPO, ControlPlane
from tests.kubernetes.real.tenant import DEPLOY, Tenant, namespace_name, tenant
from tests.support.worker import start_server
from tests.support.worker_process import worker_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _config(tmp_path: Path, cluster: Tenant, port: int = 9, extra: str = "") -> Path:
    path = tmp_path / "k8s.toml"
    path.write_text(
        f"""worker_id = "k8s-worker"
[server]
websocket_url = "ws://127.0.0.1:{port}/api/v1/selfhosted/worker/ws"
[backend.kubernetes]
namespace = "{cluster.name}"
kubeconfig = "{cluster.kubeconfig}"
{extra}
"""
    )
    return path


def _ozw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ozw", *args],
        cwd=REPO,
        env=worker_env(drop=("KUBE",)),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _check_line(result: subprocess.CompletedProcess[str]) -> str:
    (line,) = [x for x in result.stdout.splitlines() if "backend kubernetes" in x]
    return line


def _refusal(result: subprocess.CompletedProcess[str], cluster: Tenant) -> str:
    """The check's line, which must say the dry-run task Job was refused."""
    line = _check_line(result)
    assert f"a dry-run task Job was refused in namespace {cluster.name}" in line
    return line


async def test_check_passes_with_the_deploy_role(cluster: Tenant, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        config = _config(tmp_path, cluster, server.port or 0)
        result = await trio.to_thread.run_sync(lambda: _ozw("check", "--config", str(config)))
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stdout + result.stderr
    line = _check_line(result)
    assert line.startswith("ok ")
    assert "Kubernetes v1.37.2" in line
    assert "permissions ok, dry-run Job accepted" in line
    assert cluster.items("jobs") == [], "the dry-run created nothing"
    assert cluster.items("secrets") == []


def test_check_names_every_verb_missing_from_the_role(
    kube: ControlPlane, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    role = tmp_path / "role.yaml"
    text = (DEPLOY / "role.yaml").read_text()
    narrowed = text.replace('verbs: ["create", "patch", "delete"]', 'verbs: ["create", "patch"]')
    narrowed = narrowed.replace('resources: ["pods/log"]', 'resources: ["pods/status"]')
    assert narrowed.count("pods/status") == 1
    assert 'verbs: ["create", "patch"]' in narrowed
    role.write_text(narrowed)
    cluster = tenant(kube, request.node.name, tmp_path, role=role)
    result = _ozw("check", "--config", str(_config(tmp_path, cluster)))
    assert result.returncode == 1
    assert _check_line(result).endswith(
        f"missing permissions in namespace {cluster.name}: get pods/log, delete secrets"
    )


def test_check_shows_an_admission_refusal_of_the_dry_run(cluster: Tenant, tmp_path: Path) -> None:
    """A ValidatingAdmissionPolicy refuses the Job; the dry-run meets it as a real create would."""
    policy = namespace_name("corp-images-" + cluster.name)
    plane = cluster.plane
    plane.kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "admissionregistration.k8s.io/v1",
                        "kind": "ValidatingAdmissionPolicy",
                        "metadata": {"name": policy},
                        "spec": {
                            "failurePolicy": "Fail",
                            "matchConstraints": {
                                "resourceRules": [
                                    {
                                        "apiGroups": ["batch"],
                                        "apiVersions": ["v1"],
                                        "operations": ["CREATE"],
                                        "resources": ["jobs"],
                                    }
                                ]
                            },
                            "validations": [
                                {
                                    "expression": "object.spec.template.spec.containers.all("
                                    "c, c.image.startsWith('registry.corp/'))",
                                    "message": "images must come from registry.corp",
                                }
                            ],
                        },
                    },
                    {
                        "apiVersion": "admissionregistration.k8s.io/v1",
                        "kind": "ValidatingAdmissionPolicyBinding",
                        "metadata": {"name": policy},
                        "spec": {
                            "policyName": policy,
                            "validationActions": ["Deny"],
                            "matchResources": {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": cluster.name}
                                }
                            },
                        },
                    },
                ],
            }
        ),
    )
    try:
        config = _config(tmp_path, cluster)
        # The policy takes effect once the API server has loaded it: ask until it has.
        result = plane.wait_for(
            "the admission policy to refuse the dry-run",
            lambda: (
                "refused" in _check_line(found := _ozw("check", "--config", str(config))) and found
            ),
            timeout=60,
            step=1,
        )
    finally:
        plane.kubectl(
            "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy
        )
    line = _refusal(result, cluster)
    assert "images must come from registry.corp" in line


def test_check_shows_the_api_servers_validation_of_the_pod_template(
    cluster: Tenant, tmp_path: Path
) -> None:
    """A template ozw cannot judge (a value only the API server knows is wrong) fails
    the dry-run with the API server's own words."""
    config = _config(tmp_path, cluster, extra='pod_template = {dnsPolicy = "Sometimes"}')
    result = _ozw("check", "--config", str(config))
    assert result.returncode == 1
    line = _refusal(result, cluster)
    assert 'spec.template.spec.dnsPolicy: Unsupported value: "Sometimes"' in line


def test_a_preflight_refused_by_pod_security_stops_start_up(
    cluster: Tenant, tmp_path: Path
) -> None:
    """Pod Security ``restricted`` refuses the preflight's root init container: the Job
    controller's FailedCreate event is the cause the worker names."""
    cluster.plane.kubectl(
        "label", "namespace", cluster.name, "pod-security.kubernetes.io/enforce=restricted"
    )
    result = _ozw("--config", str(_config(tmp_path, cluster)))
    assert result.returncode == 1
    errors = [x for x in result.stderr.splitlines() if "kubernetes preflight" in x]
    assert len(errors) == 1, result.stderr
    assert "kubernetes preflight: Job oz-preflight-" in errors[0]
    assert "could not create its pod" in errors[0]
    assert 'violates PodSecurity "restricted:latest"' in errors[0]
    assert f"Pod Security or admission policy of namespace {cluster.name}" in errors[0]
    assert "Traceback" not in result.stderr
    cluster.wait_gone("jobs", "the preflight Job to be deleted")


def test_smoke_runs_one_task_end_to_end(cluster: Tenant, tmp_path: Path) -> None:
    result = _ozw("smoke", "--config", str(_config(tmp_path, cluster)))
    assert result.returncode == 0, result.stdout + result.stderr
    cluster.wait_gone("jobs", "the smoke test's Jobs to be deleted")


def test_check_passes_with_the_charts_role(
    kube: ControlPlane, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The Helm chart's ServiceAccount, Role and RoleBinding, rendered by the real helm,
    grant the worker what it needs on the real API server."""
    from tests.kubernetes.test_chart import REQUIRED, by_kind, render

    name = namespace_name(request.node.name)
    kube.namespace(name)
    docs = render(REQUIRED)
    objects = [by_kind(docs, kind) for kind in ("ServiceAccount", "Role", "RoleBinding")]
    for obj in objects:
        obj["metadata"]["namespace"] = name
    for subject in objects[2]["subjects"]:
        subject["namespace"] = name
    kube.apply({"apiVersion": "v1", "kind": "List", "items": objects}, name)
    account = objects[0]["metadata"]["name"]
    kubeconfig = kube.service_account_kubeconfig(tmp_path / "chart.kubeconfig", name, account)
    result = _ozw("check", "--config", str(_config(tmp_path, Tenant(kube, name, kubeconfig))))
    assert "permissions ok, dry-run Job accepted" in _check_line(result), result.stdout
