"""``ozw check`` on the Kubernetes backend where no cluster answers (the real control
plane's cases are in test_cluster_check.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.kubernetes.real.control_plane import REPO
from tests.support.ozw_command import run_ozw
from tests.support.ports import free_port
from tests.support.worker import API_KEY
from tests.support.worker_process import write_worker_config


def _ozw(*args: str) -> subprocess.CompletedProcess[str]:
    return run_ozw(*args, cwd=REPO, env={"WARP_API_KEY": API_KEY}, timeout=120)


def test_check_without_a_reachable_cluster(tmp_path: Path) -> None:
    server = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": server}}],
                "users": [{"name": "user", "user": {"token": "unused"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "user"}}],
                "current-context": "gone",
            }
        )
    )
    backend = f'[backend.kubernetes]\nnamespace = "agents"\nkubeconfig = "{kubeconfig}"'
    config = write_worker_config(tmp_path, 9, worker_id="k8s-worker", backend=backend)
    result = _ozw("check", "--config", str(config))
    assert result.returncode == 1
    (line,) = [x for x in result.stdout.splitlines() if "backend kubernetes" in x]
    assert f"cannot reach the API server at {server}" in line
    assert "Traceback" not in result.stdout + result.stderr


def test_check_with_a_missing_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "k8s.toml"
    path.write_text(f'worker_id = "w"\n[backend.kubernetes]\nkubeconfig = "{tmp_path}/nope"\n')
    result = _ozw("check", "--config", str(path))
    assert result.returncode == 1
    (line,) = [x for x in result.stdout.splitlines() if "backend kubernetes" in x]
    assert "nope not found" in line


def test_an_imported_go_config_loads(tmp_path: Path) -> None:
    source = tmp_path / "go.yaml"
    source.write_text(
        """worker_id: k8s-worker
backend:
  kubernetes:
    namespace: agents
    kubeconfig: /etc/kubeconfig
    image_pull_policy: Always
    extra_labels: {team: infra}
    active_deadline_seconds: 7200
    unschedulable_timeout: 2m
    coding_cli_sidecars: {claude: registry.internal/claude:v1}
    pod_template:
      nodeSelector: {kubernetes.io/os: linux}
      containers:
        - name: task
          resources: {requests: {cpu: "2", memory: 4Gi}}
    preflight_resources:
      limits: {cpu: 100m, memory: 64Mi}
"""
    )
    output = tmp_path / "worker.toml"
    assert _ozw("config", "import", str(source), "--output", str(output)).returncode == 0
    from ozw.config import CliOverrides, KubernetesConfig, load_config

    backend = load_config(str(output), CliOverrides(), {}).backend
    assert isinstance(backend, KubernetesConfig)
    assert backend.namespace == "agents"
    assert backend.image_pull_policy == "Always"
    assert backend.unschedulable_timeout == 120
    assert backend.active_deadline_seconds == 7200
    assert backend.coding_cli_sidecars == {"claude": "registry.internal/claude:v1"}
    assert backend.pod_template is not None
    assert backend.pod_template["nodeSelector"] == {"kubernetes.io/os": "linux"}
