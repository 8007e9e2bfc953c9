"""One test's namespace on the real control plane, set up as deploy/kubernetes/ says."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import attrs

from ozw.backends.kubernetes.names import job_name
from tests.kubernetes.real.control_plane import REPO, ControlPlane

DEPLOY = REPO / "deploy" / "kubernetes"
RELEASE = "ozw.test/exit"
"""The pod annotation the kubelet stand-in ends a ``fake/hold`` container on."""
SAY = "ozw.test/say"
"""The pod annotation whose new values a ``fake/hold`` container logs."""


@attrs.define
class Tenant:
    plane: ControlPlane
    name: str
    kubeconfig: Path

    def path(self, resource: str, name: str = "") -> str:
        group = "/apis/batch/v1" if resource == "jobs" else "/api/v1"
        return f"{group}/namespaces/{self.name}/{resource}" + (f"/{name}" if name else "")

    def items(self, resource: str, selector: str = "") -> list[dict[str, Any]]:
        query = f"?labelSelector={selector}" if selector else ""
        found: list[dict[str, Any]] = self.plane.call("GET", self.path(resource) + query)["items"]
        return found

    def job(self, task_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.plane.get(self.path("jobs", job_name(task_id, task_id)))
        return found

    def pods_of(self, task_id: str) -> list[dict[str, Any]]:
        return self.items("pods", f"job-name={job_name(task_id, task_id)}")

    def release(self, task_id: str, code: int) -> None:
        """End the held task container of ``task_id``'s pod with exit ``code``."""
        self._annotate(task_id, RELEASE, str(code))

    def say(self, task_id: str, line: str) -> None:
        """Have the held task container of ``task_id``'s pod log ``line``."""
        self._annotate(task_id, SAY, line)

    def _annotate(self, task_id: str, key: str, value: str) -> None:
        for pod in self.pods_of(task_id):
            self.plane.call(
                "PATCH",
                self.path("pods", pod["metadata"]["name"]),
                {"metadata": {"annotations": {key: value}}},
                content_type="application/merge-patch+json",
            )

    def revoke(self, verb: str, resource: str) -> None:
        """Take ``verb`` on ``resource`` (``pods/log`` for a subresource) out of the
        worker's Role, and wait until the API server's authorizer has seen the change."""
        path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{self.name}/roles/ozw"
        role = self.plane.call("GET", path)
        for rule in role["rules"]:
            if rule["resources"] == [resource]:
                rule["verbs"].remove(verb)
        role["rules"] = [rule for rule in role["rules"] if rule["verbs"]]
        self.plane.call("PUT", path, role)
        kind, _, sub = resource.partition("/")
        ask = ["-n", self.name, "auth", "can-i", verb, kind]
        ask += [f"--subresource={sub}"] if sub else []
        account = f"system:serviceaccount:{self.name}:ozw"
        self.plane.wait_for(
            f"the Role to lose {verb} {resource}",
            lambda: self.plane.kubectl(*ask, f"--as={account}", check=False).stdout.strip() == "no",
        )

    def wait_gone(self, resource: str, what: str, timeout: float = 60) -> None:
        """Wait until the namespace holds no ``resource`` (the controllers' work)."""
        self.plane.wait_for(what, lambda: not self.items(resource), timeout=timeout)


def namespace_name(test: str) -> str:
    """A namespace name for a test (DNS label: short, lower case, unique)."""
    slug = re.sub(r"[^a-z0-9]+", "-", test.lower()).strip("-")[:40].strip("-")
    return f"{slug}-{hashlib.sha256(test.encode()).hexdigest()[:6]}"


def tenant(
    plane: ControlPlane,
    test: str,
    tmp_path: Path,
    *,
    role: Path | None = None,
    namespace: str | None = None,
) -> Tenant:
    """A namespace (``test``'s, or ``namespace``) with the deploy/ ServiceAccount, Role
    (or ``role``) and RoleBinding."""
    name = namespace or namespace_name(test)
    plane.namespace(name)
    files = [
        DEPLOY / "serviceaccount.yaml",
        role or DEPLOY / "role.yaml",
        DEPLOY / "rolebinding.yaml",
    ]
    args = [arg for path in files for arg in ("-f", str(path))]
    plane.kubectl("-n", name, "apply", *args)
    kubeconfig = plane.service_account_kubeconfig(tmp_path / "ozw.kubeconfig", name, "ozw")
    return Tenant(plane, name, kubeconfig)
