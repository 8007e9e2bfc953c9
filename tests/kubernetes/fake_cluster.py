"""Start the fake API server as a process and point kubeconfigs at it (for tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

REPO = Path(__file__).resolve().parents[2]
KUBECTL = str(Path(sys.executable).with_name("kubectl"))
"""The PyPI package's kubectl beside this interpreter (never a ``kubectl`` on PATH)."""


@attrs.define
class FakeCluster:
    url: str
    process: subprocess.Popen[str]
    kubeconfig: Path
    namespace: str = "agents"

    def control(self, path: str, **query: str) -> Any:
        suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
        request = urllib.request.Request(
            f"{self.url}/_fake/{path}{suffix}", method="POST", data=b""
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/_fake/requests", timeout=10) as response:
            result: list[dict[str, Any]] = json.load(response)
            return result

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return json.load(response)

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        result = subprocess.run(
            [KUBECTL, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result


def write_kubeconfig(path: Path, url: str, namespace: str, user: dict[str, Any]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": user}],
        "contexts": [
            {
                "name": "fake",
                "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
            }
        ],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))
    return path


@contextmanager
def fake_cluster(
    tmp_path: Path, *args: str, user: dict[str, Any] | None = None
) -> Iterator[FakeCluster]:
    """A running fake API server (``args`` are its options) and a kubeconfig for it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.kubernetes.fakeapi", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        url = line.split()[-1]
        kubeconfig = write_kubeconfig(
            tmp_path / "kubeconfig", url, "agents", user or {"token": "test-token"}
        )
        yield FakeCluster(url, process, kubeconfig)
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
