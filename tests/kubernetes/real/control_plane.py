"""A real Kubernetes control plane on 127.0.0.1 for tests: etcd, kube-apiserver and
kube-controller-manager as built by ``tools/kube/build.sh``, plus the kubelet stand-in
(:mod:`tests.kubernetes.real.kubelet`) as the one node.

Identities are static tokens (``--token-auth-file``): ``admin`` (system:masters) for the
tests' own calls, the controller manager's and the scheduler's bootstrap users, and the
node's (``system:node:<name>``, so the Node authorizer and NodeRestriction apply to the
stand-in as to a kubelet). Workers get real service-account tokens (TokenRequest).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.kubernetes.real.kubelet import Api
from tests.support.ports import free_port

REPO: Final = Path(__file__).resolve().parents[3]
BUILD: Final = REPO / "tools" / "kube" / "build.sh"
KUBECTL: Final = str(Path(sys.executable).with_name("kubectl"))
NODE: Final = "ozw-node"
CONTROLLERS: Final = (
    "job-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
)
START_TIMEOUT: Final = 120.0


class ControlPlaneError(Exception):
    """The control plane could not be built or started; the message says which part."""


def binaries() -> Path:
    """The directory of the built commands (``.ci/run`` builds them; a test run does
    not start a build of many minutes under its timeout)."""
    done = subprocess.run(
        ["sh", str(BUILD), "--check"], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        raise ControlPlaneError(done.stderr.strip())
    return Path(done.stdout.strip().splitlines()[-1])


def kubeconfig(path: Path, server: str, ca: Path, token: str, namespace: str = "default") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "real", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [
            {"name": "real", "context": {"cluster": "real", "user": "user", "namespace": namespace}}
        ],
        "current-context": "real",
    }
    path.write_text(json.dumps(config))
    return path


@attrs.define
class Process:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise ControlPlaneError(f"{self.name} exited {self.popen.returncode}:\n{tail}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=20)


@attrs.define
class ControlPlane:
    """A running control plane (see the module docstring)."""

    root: Path
    url: str
    etcd_url: str
    ca: Path
    tokens: dict[str, str]
    processes: dict[str, Process]
    admin_kubeconfig: Path
    _context: ssl.SSLContext = attrs.field(init=False)
    _api: Api = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._context = ssl.create_default_context(cafile=str(self.ca))
        self._api = Api(self.url, str(self.ca), self.tokens)

    # -- plain API calls (admin unless another identity is named) --

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: str = "admin",
        content_type: str = "application/json",
    ) -> Any:
        return self._api.call(method, path, body, user=user, content_type=content_type)

    def get(self, path: str) -> Any:
        """The object at ``path``, or None when there is none."""
        try:
            return self.call("GET", path)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def apply(self, obj: dict[str, Any], namespace: str) -> None:
        """Create ``obj`` by kubectl (as an administrator would)."""
        self.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(obj))

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.admin_kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        result = subprocess.run(
            [KUBECTL, *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def wait_for(
        self, what: str, probe: Callable[[], Any], timeout: float = 60, step: float = 0.2
    ) -> Any:
        """Poll ``probe`` (the API's state, which has no event for tests) until truthy."""
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            for process in self.processes.values():
                process.check()
            time.sleep(step)

    # -- namespaces and identities --

    def namespace(self, name: str) -> None:
        """A fresh namespace, once its ``default`` service account exists (the
        serviceaccount controller made it: pods can be admitted)."""
        self.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        self.wait_for(
            f"the default service account of {name}",
            lambda: self.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        )

    def service_account_kubeconfig(self, path: Path, namespace: str, account: str) -> Path:
        """A kubeconfig with a real token of ``account`` (TokenRequest, one hour)."""
        review = self.call(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            {"spec": {"expirationSeconds": 3600}},
        )
        return kubeconfig(path, self.url, self.ca, review["status"]["token"], namespace)

    # -- faults --

    def compact_etcd(self) -> int:
        """Compact etcd's history at its current revision (as the API server does every
        few minutes); returns the revision."""
        status = self._etcd("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
        revision = int(status["header"]["revision"])
        self._etcd("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def _etcd(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.etcd_url}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def restart_apiserver(self) -> None:
        """Kill kube-apiserver and start it again on the same port: every open watch
        and followed log breaks, and its watch cache starts from etcd's current revision.
        (A SIGTERM'd one stops listening but keeps its open streams until they end.)"""
        apiserver = self.processes["kube-apiserver"]
        apiserver.stop(signal.SIGKILL)
        apiserver.start()
        self._wait_ready()

    def _wait_ready(self) -> None:
        def ready() -> bool:
            self.processes["kube-apiserver"].check()
            try:
                request = urllib.request.Request(f"{self.url}/readyz")
                request.add_header("Authorization", f"Bearer {self.tokens['admin']}")
                with urllib.request.urlopen(request, timeout=5, context=self._context) as answer:
                    return bool(answer.status == 200)
            except (OSError, urllib.error.URLError):
                return False

        self.wait_for("kube-apiserver to be ready", ready, timeout=START_TIMEOUT, step=0.5)

    def logs(self) -> dict[str, Path]:
        return {name: process.log for name, process in self.processes.items()}

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes[name].stop()


def _certificates(root: Path) -> tuple[Path, Path, Path, Path, Path]:
    """(CA, serving cert, serving key, service-account key, its public key) as files."""
    authority = trustme.CA()
    serving = authority.issue_cert("127.0.0.1", "localhost")
    ca = root / "ca.crt"
    authority.cert_pem.write_to_path(str(ca))
    cert, key = root / "serving.crt", root / "serving.key"
    serving.cert_chain_pems[0].write_to_path(str(cert))
    serving.private_key_pem.write_to_path(str(key))
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_key, sa_pub = root / "sa.key", root / "sa.pub"
    sa_key.write_bytes(
        signing.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    sa_pub.write_bytes(
        signing.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ca, cert, key, sa_key, sa_pub


@contextmanager
def control_plane(root: Path) -> Iterator[ControlPlane]:
    """Build (or reuse) the commands, start everything, yield; stop everything."""
    bin_dir = binaries()
    root.mkdir(parents=True, exist_ok=True)
    ca, cert, key, sa_key, sa_pub = _certificates(root)
    tokens = {
        user: secrets.token_hex(16) for user in ("admin", "controller-manager", "scheduler", "node")
    }
    (root / "tokens.csv").write_text(
        f'{tokens["admin"]},admin,admin,"system:masters"\n'
        f"{tokens['controller-manager']},system:kube-controller-manager,kcm\n"
        f"{tokens['scheduler']},system:kube-scheduler,scheduler\n"
        f'{tokens["node"]},system:node:{NODE},node,"system:nodes"\n'
    )
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    url = f"https://127.0.0.1:{api_port}"
    admin = kubeconfig(root / "admin.kubeconfig", url, ca, tokens["admin"])
    kcm = kubeconfig(root / "kcm.kubeconfig", url, ca, tokens["controller-manager"])
    processes = {
        "etcd": Process(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=ozw",
                f"--data-dir={root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=ozw=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
            ],
            root / "etcd.log",
        ),
        "kube-apiserver": Process(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={root / 'apiserver-certs'}",
                f"--tls-cert-file={cert}",
                f"--tls-private-key-file={key}",
                f"--token-auth-file={root / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                f"--kubelet-certificate-authority={ca}",
                "--kubelet-preferred-address-types=InternalIP",
                "--endpoint-reconciler-type=none",
            ],
            root / "kube-apiserver.log",
        ),
        "kube-controller-manager": Process(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={ca}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
            root / "kube-controller-manager.log",
        ),
        "kubelet": Process(
            "kubelet",
            [
                sys.executable,
                "-m",
                "tests.kubernetes.real.kubelet",
                f"--server={url}",
                f"--ca={ca}",
                f"--cert={cert}",
                f"--key={key}",
                f"--node={NODE}",
                f"--tokens={root / 'standin-tokens.json'}",
            ],
            root / "kubelet.log",
        ),
    }
    (root / "standin-tokens.json").write_text(
        json.dumps({"node": tokens["node"], "scheduler": tokens["scheduler"]})
    )
    plane = ControlPlane(root, url, etcd_url, ca, tokens, processes, admin)
    try:
        processes["etcd"].start()
        processes["kube-apiserver"].start()
        plane._wait_ready()
        processes["kube-controller-manager"].start()
        processes["kubelet"].start()
        plane.wait_for(
            f"node {NODE} to be Ready",
            lambda: _node_ready(plane.get(f"/api/v1/nodes/{NODE}")),
            timeout=START_TIMEOUT,
        )
        yield plane
    finally:
        plane.stop()
        shutil.rmtree(root / "etcd", ignore_errors=True)


def _node_ready(node: Any) -> bool:
    conditions = (node or {}).get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
