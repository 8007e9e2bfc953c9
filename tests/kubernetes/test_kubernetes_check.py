"""``ozw check`` and start-up on the Kubernetes backend, against the fake API server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from tests.kubernetes.fake_cluster import REPO, FakeCluster, fake_cluster
from tests.support.ozw_command import run_ozw
from tests.support.worker import API_KEY, start_server


def _config(tmp_path: Path, cluster: FakeCluster, extra: str = "", port: int = 9) -> Path:
    path = tmp_path / "k8s.toml"
    path.write_text(
        f"""worker_id = "k8s-worker"
[server]
websocket_url = "ws://127.0.0.1:{port}/api/v1/selfhosted/worker/ws"
[backend.kubernetes]
namespace = "agents"
kubeconfig = "{cluster.kubeconfig}"
{extra}
"""
    )
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARP_", "KUBE"))}
    env["WARP_API_KEY"] = API_KEY
    return env


def _ozw(*args: str) -> subprocess.CompletedProcess[str]:
    return run_ozw(*args, cwd=REPO, env={"WARP_API_KEY": API_KEY}, timeout=120)


async def test_check_passes_against_a_permissive_cluster(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        with fake_cluster(tmp_path) as cluster:
            config = _config(tmp_path, cluster, port=server.port or 0)
            result = await trio.run_process(
                [sys.executable, "-m", "ozw", "check", "--config", str(config)],
                cwd=REPO,
                env=_env(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            requests = cluster.requests()
        nursery.cancel_scope.cancel()
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stdout + stderr
    line = next(x for x in stdout.splitlines() if "backend kubernetes" in x)
    assert line.startswith("ok ")
    assert "Kubernetes v1.37.0-fake" in line
    assert "permissions ok, dry-run Job accepted" in line
    reviews = [r for r in requests if r["path"].endswith("selfsubjectaccessreviews")]
    assert len(reviews) == 14
    dry_runs = [r for r in requests if r["query"].get("dryRun") == "All"]
    assert [r["path"] for r in dry_runs] == ["/apis/batch/v1/namespaces/agents/jobs"]
    assert not [
        r
        for r in requests
        if r["method"] == "POST"
        and "dryRun" not in r["query"]
        and not r["path"].endswith("selfsubjectaccessreviews")
    ], "check has no side effect"


def test_check_names_every_missing_permission_in_one_line(tmp_path: Path) -> None:
    denied = ("--deny", "create:secrets", "--deny", "get:pods/log", "--deny", "watch:jobs")
    with fake_cluster(tmp_path, *denied) as cluster:
        result = _ozw("check", "--config", str(_config(tmp_path, cluster)))
    assert result.returncode == 1
    (line,) = [x for x in result.stdout.splitlines() if "backend kubernetes" in x]
    assert line.startswith("FAIL")
    assert line.endswith(
        "missing permissions in namespace agents: watch jobs, get pods/log, create secrets"
    )


def test_check_shows_an_admission_refusal_of_the_dry_run(tmp_path: Path) -> None:
    with fake_cluster(tmp_path, "--reject-jobs", "images must come from registry.corp") as cluster:
        result = _ozw("check", "--config", str(_config(tmp_path, cluster)))
    assert result.returncode == 1
    (line,) = [x for x in result.stdout.splitlines() if "backend kubernetes" in x]
    assert "a dry-run task Job was refused in namespace agents" in line
    assert "images must come from registry.corp" in line


def test_check_without_a_reachable_cluster(tmp_path: Path) -> None:
    with fake_cluster(tmp_path) as cluster:
        config = _config(tmp_path, cluster)
        cluster.process.kill()
        cluster.process.wait()
        result = _ozw("check", "--config", str(config))
    assert result.returncode == 1
    (line,) = [x for x in result.stdout.splitlines() if "backend kubernetes" in x]
    assert "cannot reach the API server at http://127.0.0.1:" in line
    assert "Traceback" not in result.stdout + result.stderr


def test_check_with_a_missing_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "k8s.toml"
    path.write_text(f'worker_id = "w"\n[backend.kubernetes]\nkubeconfig = "{tmp_path}/nope"\n')
    result = _ozw("check", "--config", str(path))
    assert result.returncode == 1
    (line,) = [x for x in result.stdout.splitlines() if "backend kubernetes" in x]
    assert "nope not found" in line


def test_a_failing_preflight_stops_start_up_with_guidance(tmp_path: Path) -> None:
    with fake_cluster(tmp_path, "--forbid-root") as cluster:
        result = _ozw("--config", str(_config(tmp_path, cluster)))
        jobs = cluster.get("/apis/batch/v1/namespaces/agents/jobs")["items"]
    assert result.returncode == 1
    errors = [x for x in result.stderr.splitlines() if "error" in x.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("ozw: error: kubernetes preflight: Job oz-preflight-")
    assert "could not create its pod" in errors[0]
    assert 'violates PodSecurity "restricted:latest"' in errors[0]
    assert "Pod Security or admission policy of namespace agents" in errors[0]
    assert "Traceback" not in result.stderr
    assert [j for j in jobs if "deletionTimestamp" not in j["metadata"]] == [], "always deleted"


def test_smoke_runs_one_task_end_to_end(tmp_path: Path) -> None:
    with fake_cluster(tmp_path) as cluster:
        result = _ozw("smoke", "--config", str(_config(tmp_path, cluster)))
        jobs = cluster.get("/apis/batch/v1/namespaces/agents/jobs")["items"]
        requests = cluster.requests()
    assert result.returncode == 0, result.stdout + result.stderr
    created = [
        r
        for r in requests
        if r["method"] == "POST" and r["path"].endswith("/jobs") and "dryRun" not in r["query"]
    ]
    assert len(created) == 2, "the preflight Job and the task's"
    assert [j for j in jobs if "deletionTimestamp" not in j["metadata"]] == []


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
