"""charts/ozw on the real control plane: the API server accepts every object the
chart renders from the Go chart's values (a server-side dry run; the PodMonitor against
the Prometheus Operator's own CRD), and with the
chart's ServiceAccount and Role, ``ozw check`` run with the chart's arguments and
config finds every permission the Kubernetes backend needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from tests.kubernetes.real.control_plane import REPO, ControlPlane
from tests.kubernetes.real.tenant import namespace_name
from tests.kubernetes.test_chart import GO_VALUES, REQUIRED, by_kind, helm, merged
from tests.support.worker import start_server
from tests.support.worker_process import worker_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


CRDS = REPO / "tools" / "kube" / "crds.sh"


def install_podmonitor_crd(kube: ControlPlane) -> None:
    """The Prometheus Operator's own PodMonitor CRD (tools/kube/crds.sh), established."""
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/local/go/bin"}
    fetched = subprocess.run(
        ["sh", str(CRDS)], capture_output=True, text=True, timeout=300, check=True, env=env
    )
    crd = Path(fetched.stdout.strip().splitlines()[-1])
    # Server-side: the CRD is too big for the last-applied annotation.
    kube.kubectl("apply", "--server-side", "-f", str(crd))
    kube.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/podmonitors.monitoring.coreos.com",
    )  # fmt: skip


def render_in(namespace: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    result = helm("template", "oz", str(REPO / "charts" / "ozw"), "-n", namespace, values=values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


async def test_the_chart_on_a_real_api_server(
    kube: ControlPlane, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    namespace = namespace_name(request.node.name)
    kube.namespace(namespace)
    install_podmonitor_crd(kube)
    everything = {
        "warp": {"apiKeySecret": {"create": True, "value": "k"}},
        "metrics": {"enabled": True, "podMonitor": {"create": True}},
    }
    docs = render_in(namespace, merged(GO_VALUES, REQUIRED, everything))
    assert "PodMonitor" in {doc["kind"] for doc in docs}
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    dry = kube.kubectl("-n", namespace, "apply", "--dry-run=server", "-f", "-", stdin=listed)
    assert len(dry.stdout.splitlines()) == len(docs), dry.stdout
    # The PodMonitor met the operator's schema: one it breaks is refused.
    monitor = by_kind(tuple(docs), "PodMonitor")
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["podMetricsEndpoints"][0]["interval"] = "every thirty seconds"
    refused = kube.kubectl(
        "-n", namespace, "apply", "--dry-run=server", "-f", "-",
        stdin=json.dumps(broken), check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "spec.podMetricsEndpoints[0].interval" in refused.stderr, refused.stderr
    # The chart's identity, for real: its ServiceAccount, Role and RoleBinding.
    access = [doc for doc in docs if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    kube.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": access}),
    )
    account = by_kind(tuple(docs), "ServiceAccount")["metadata"]["name"]
    kubeconfig = kube.service_account_kubeconfig(tmp_path / "kubeconfig", namespace, account)
    config = tmp_path / "config.yaml"
    config.write_text(by_kind(tuple(docs), "ConfigMap")["data"]["config.yaml"])
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        url = f"ws://127.0.0.1:{server.port}/api/v1/selfhosted/worker/ws"
        argv = [
            sys.executable, "-m", "ozw", "check", "--config-file", str(config),
            "--backend", "kubernetes", "--web-socket-url", url,
            "--server-root-url", f"http://127.0.0.1:{server.port}",
        ]  # fmt: skip
        env = {**worker_env(drop=("KUBE",)), "KUBECONFIG": str(kubeconfig)}
        result = await trio.to_thread.run_sync(
            lambda: subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90)
        )
        nursery.cancel_scope.cancel()
    (line,) = [x for x in result.stdout.splitlines() if "backend kubernetes" in x]
    assert line.startswith("ok "), result.stdout + result.stderr
    assert "permissions ok, dry-run Job accepted" in line
