"""Watch and deletion semantics of the fake API server that kubectl does not show."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kubernetes.fake_cluster import FakeCluster, fake_cluster

JOBS = "/apis/batch/v1/namespaces/agents/jobs"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with fake_cluster(tmp_path) as running:
        yield running


def _call(cluster: FakeCluster, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        cluster.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _job(name: str, image: str = "fake/hold") -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "task", "image": image}]}
            }
        },
    }


def _watch(cluster: FakeCluster, query: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{cluster.url}{JOBS}?watch=true&{query}", timeout=30) as stream:
        return [json.loads(line) for line in stream]


def test_watch_from_a_version_replays_later_changes(cluster: FakeCluster) -> None:
    _, listed = _call(cluster, "GET", JOBS)
    version = listed["metadata"]["resourceVersion"]
    _call(cluster, "POST", JOBS, _job("a"))
    events = _watch(
        cluster, f"resourceVersion={version}&timeoutSeconds=1&fieldSelector=metadata.name%3Da"
    )
    assert events[0]["type"] == "ADDED"
    assert events[0]["object"]["metadata"]["name"] == "a"
    assert all(e["object"]["metadata"]["name"] == "a" for e in events)
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions)
    assert versions[0] > int(version)


def test_a_compacted_version_is_410_gone(cluster: FakeCluster) -> None:
    _call(cluster, "POST", JOBS, _job("a"))
    _, listed = _call(cluster, "GET", JOBS)
    old = int(listed["metadata"]["resourceVersion"]) - 1
    cluster.control("compact")
    (event,) = _watch(cluster, f"resourceVersion={old}&timeoutSeconds=1")
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"


def test_status_bodies(cluster: FakeCluster) -> None:
    code, body = _call(cluster, "GET", f"{JOBS}/missing")
    assert (code, body["kind"], body["reason"], body["details"]["kind"]) == (
        404,
        "Status",
        "NotFound",
        "jobs",
    )
    _call(cluster, "POST", JOBS, _job("a"))
    code, body = _call(cluster, "POST", JOBS, _job("a"))
    assert (code, body["reason"]) == (409, "AlreadyExists")
    code, body = _call(cluster, "POST", JOBS, {"metadata": {}, "spec": {}})
    assert (code, body["reason"]) == (422, "Invalid")


def test_foreground_deletion_removes_dependents_before_the_job(cluster: FakeCluster) -> None:
    _, job = _call(cluster, "POST", JOBS, _job("a"))
    secret = {
        "metadata": {
            "name": "a",
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "a",
                    "uid": job["metadata"]["uid"],
                }
            ],
        },
        "stringData": {"K": "v"},
    }
    code, stored = _call(cluster, "POST", "/api/v1/namespaces/agents/secrets", secret)
    assert code == 201
    assert stored["data"] == {"K": "dg=="}
    _, listed = _call(cluster, "GET", JOBS)
    since = listed["metadata"]["resourceVersion"]
    code, marked = _call(cluster, "DELETE", f"{JOBS}/a", {"propagationPolicy": "Foreground"})
    assert code == 200
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"]
    events = _watch(
        cluster, f"resourceVersion={since}&timeoutSeconds=2&fieldSelector=metadata.name%3Da"
    )
    assert [e["type"] for e in events][-1] == "DELETED"
    assert _call(cluster, "GET", "/api/v1/namespaces/agents/secrets/a")[0] == 404
    _, pods = _call(cluster, "GET", "/api/v1/namespaces/agents/pods")
    assert pods["items"] == []


def test_jobs_orphan_their_pods_without_a_policy(cluster: FakeCluster) -> None:
    _call(cluster, "POST", JOBS, _job("a"))
    pods: list[Any] = []
    while not pods:
        pods = _call(cluster, "GET", "/api/v1/namespaces/agents/pods")[1]["items"]
    assert _call(cluster, "DELETE", f"{JOBS}/a")[0] == 200
    remaining = _call(cluster, "GET", "/api/v1/namespaces/agents/pods")[1]["items"]
    assert [p["metadata"]["name"] for p in remaining] == [pods[0]["metadata"]["name"]]
