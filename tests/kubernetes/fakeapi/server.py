"""The fake Kubernetes API server: real API paths, JSON, Status bodies and watches.

Serves plain HTTP on 127.0.0.1 (a kubeconfig ``server: http://127.0.0.1:<port>``),
one thread per connection. What it speaks (enough for kubectl and lightkube):
discovery (``/version``, ``/api``, ``/apis``, group versions); create / get / list /
watch / patch (merge) / delete of Jobs, Pods, Secrets and Events with label and field
selectors, resource versions, 404 / 409 / 410 / 422 ``Status`` bodies, ``dryRun=All``,
propagation policies with owner-reference garbage collection; pod logs
(``follow``, ``container``, ``limitBytes``); ``SelfSubjectAccessReview``. The Job
controller and kubelet are :mod:`~tests.kubernetes.fakeapi.kubelet`.

Control endpoints for tests live under ``/_fake/`` (not part of the Kubernetes API).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from tests.kubernetes.fakeapi.discovery import (
    RESOURCES,
    VERSION,
    gv_path,
    merge_patch,
    openapi_document,
    strict_check,
)
from tests.kubernetes.fakeapi.kubelet import Cluster
from tests.kubernetes.fakeapi.protobuf import access_review
from tests.kubernetes.fakeapi.store import KINDS, ApiError, Obj, Store, now

PROTOBUF = "application/vnd.kubernetes.protobuf"
_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/v1)"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[a-z]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?$"
)


class FakeApi:
    """The state behind the server: the store, the cluster, access rules, request log."""

    def __init__(
        self,
        *,
        step: float = 0.05,
        forbid_root: bool = False,
        token: str | None = None,
        reject_jobs: str | None = None,
        watch_timeout: float = 300.0,
    ) -> None:
        self.store = Store()
        self.cluster = Cluster(self.store, step=step, forbid_root=forbid_root)
        self.token = token
        self.reject_jobs = reject_jobs
        self.watch_timeout = watch_timeout
        self.denied: set[str] = set()
        self.requests: list[Obj] = []
        self.cut = 0
        """Bumped to end every open watch (a load balancer dropping connections)."""

    def allowed(self, verb: str, resource: str, subresource: str = "") -> bool:
        key = f"{verb}:{resource}" + (f"/{subresource}" if subresource else "")
        return key not in self.denied


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: ClassVar[FakeApi]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read /_fake/requests instead

    # --- plumbing ------------------------------------------------------------------

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, error: ApiError) -> None:
        self._send(error.code, error.status())

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or "application/json"
        if raw and content_type.startswith(PROTOBUF) and "accessreviews" in self.path:
            try:
                return access_review(raw)
            except (ValueError, IndexError):
                raise ApiError(400, "BadRequest", "undecodable protobuf body") from None
        if raw and "json" not in content_type:
            # Like a server without protobuf/CBOR: clients fall back to JSON on 415.
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format: {content_type}",
            )
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadRequest", "the body is not JSON") from None

    def _handle(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        self.api.requests.append({"method": method, "path": url.path, "query": query})
        try:
            if url.path.startswith("/_fake/"):
                self._control(method, url.path, query)
                return
            if self.api.token is not None:
                expected = f"Bearer {self.api.token}"
                if self.headers.get("Authorization") != expected:
                    raise ApiError(401, "Unauthorized", "Unauthorized")
            if method == "GET" and self._discovery(url.path):
                return
            match = _PATH.match(url.path)
            if match is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            self._resource(method, match.groupdict(), query)
        except ApiError as error:
            self._error(error)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = lambda self: self._handle("GET")  # noqa: E731
    do_POST = lambda self: self._handle("POST")  # noqa: E731
    do_PATCH = lambda self: self._handle("PATCH")  # noqa: E731
    do_PUT = lambda self: self._handle("PUT")  # noqa: E731
    do_DELETE = lambda self: self._handle("DELETE")  # noqa: E731

    # --- discovery -----------------------------------------------------------------

    def _discovery(self, path: str) -> bool:
        groups = [g for g in RESOURCES if "/" in g]
        if path == "/version":
            self._send(200, VERSION)
        elif path == "/api":
            self._send(
                200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            )
        elif path == "/apis":
            self._send(
                200,
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": g.split("/")[0],
                            "versions": [{"groupVersion": g, "version": "v1"}],
                            "preferredVersion": {"groupVersion": g, "version": "v1"},
                        }
                        for g in groups
                    ],
                },
            )
        elif path == "/openapi/v3":
            self._send(
                200,
                {
                    "paths": {
                        gv_path(g): {"serverRelativeURL": f"/openapi/v3/{gv_path(g)}?hash=fake"}
                        for g in RESOURCES
                    }
                },
            )
        elif path.startswith("/openapi/v3/"):
            self._send(200, openapi_document(path.removeprefix("/openapi/v3/")))
        elif path == "/api/v1" or path.removeprefix("/apis/") in groups:
            group_version = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
            self._send(
                200,
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": group_version,
                    "resources": RESOURCES[group_version],
                },
            )
        else:
            return False
        return True

    # --- resources -------------------------------------------------------------------

    def _resource(self, method: str, parts: dict[str, str | None], query: dict[str, str]) -> None:
        resource, ns, name, sub = parts["resource"] or "", parts["ns"], parts["name"], parts["sub"]
        if resource == "selfsubjectaccessreviews" and method == "POST":
            self._access_review(self._body())
            return
        if resource == "namespaces" and method == "GET" and ns is None and name:
            # Every namespace exists (kubectl asks after a 404 to word its error).
            self._send(
                200,
                {
                    "kind": "Namespace",
                    "apiVersion": "v1",
                    "metadata": {"name": name, "uid": name},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )
            return
        if resource not in KINDS or (parts["group"] or "") != KINDS[resource][2]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        store = self.api.store
        dry_run = query.get("dryRun") == "All"
        if method == "GET" and name is None:
            matches = store.matching(
                resource, ns, query.get("labelSelector"), query.get("fieldSelector")
            )
            if query.get("watch") in ("true", "1"):
                self._watch(resource, matches, query)
            else:
                items, version = store.select(resource, matches)
                api_version, kind, _ = KINDS[resource]
                self._send(
                    200,
                    {
                        "kind": f"{kind}List",
                        "apiVersion": api_version,
                        "metadata": {"resourceVersion": str(version)},
                        "items": items,
                    },
                )
        elif method == "GET" and sub == "log" and resource == "pods" and ns and name:
            self._logs(ns, name, query)
        elif method == "GET" and ns and name:
            self._send(200, store.get(resource, ns, name))
        elif method == "POST" and ns and name is None:
            body = self._body()
            if resource == "jobs" and self.api.reject_jobs:
                raise ApiError(
                    403,
                    "Forbidden",
                    'admission webhook "policy.example.com" denied the request: '
                    + self.api.reject_jobs,
                )
            if query.get("fieldValidation") == "Strict":
                strict_check(body)
            created = store.create(resource, ns, body, dry_run=dry_run)
            if resource == "jobs" and not dry_run:
                self._init_job(created)
                created = store.get(resource, ns, created["metadata"]["name"])
            self._send(201, created)
        elif method == "PATCH" and ns and name:
            patch = self._body()
            if dry_run:
                self._send(200, merge_patch(store.get(resource, ns, name), patch))
            else:
                self._send(
                    200, store.update(resource, ns, name, lambda o: o.update(merge_patch(o, patch)))
                )
        elif method == "DELETE" and ns and name:
            body = self._body()
            policy = query.get("propagationPolicy") or body.get("propagationPolicy")
            self._send(200, self._delete(resource, ns, name, policy, dry_run))
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _init_job(self, job: Obj) -> None:
        uid = job["metadata"]["uid"]

        def defaults(stored: Obj) -> None:
            stored["spec"].setdefault(
                "selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            )
            stored["spec"].setdefault("completions", 1)
            stored["spec"].setdefault("parallelism", 1)
            stored.setdefault("status", {})

        job = self.api.store.update(
            "jobs", job["metadata"]["namespace"], job["metadata"]["name"], defaults
        )
        self.api.cluster.job_created(job)

    def _delete(self, resource: str, ns: str, name: str, policy: str | None, dry_run: bool) -> Obj:
        store = self.api.store
        obj = store.get(resource, ns, name)
        if dry_run:
            return obj
        # batch/v1 Jobs orphan their pods unless told otherwise (kubectl says Background).
        policy = policy or ("Orphan" if resource == "jobs" else "Background")
        uid = obj["metadata"]["uid"]
        if policy == "Foreground":

            def mark(o: Obj) -> None:
                o["metadata"]["deletionTimestamp"] = now()
                o["metadata"]["finalizers"] = ["foregroundDeletion"]

            marked = store.update(resource, ns, name, mark)
            threading.Thread(
                target=self._collect, args=(resource, ns, name, uid, True), daemon=True
            ).start()
            return marked
        deleted = store.delete(resource, ns, name)
        if policy == "Background":
            threading.Thread(
                target=self._collect, args=(resource, ns, name, uid, False), daemon=True
            ).start()
        return deleted

    def _collect(self, resource: str, ns: str, name: str, uid: str, owner_last: bool) -> None:
        """The garbage collector: dependents go, then (foreground) the owner."""
        time.sleep(self.api.cluster.step)
        for key in self.api.store.owned_by(uid):
            with contextlib.suppress(ApiError):
                self.api.store.delete(*key)
        if owner_last:
            with contextlib.suppress(ApiError):
                self.api.store.delete(resource, ns, name)

    def _watch(self, resource: str, matches: Any, query: dict[str, str]) -> None:
        store = self.api.store
        since_text = query.get("resourceVersion") or "0"
        timeout = min(
            float(query.get("timeoutSeconds") or self.api.watch_timeout), self.api.watch_timeout
        )
        deadline = time.monotonic() + timeout
        cut = self.api.cut
        initial: list[tuple[str, Obj]] = []
        if since_text == "0":
            items, since = store.select(resource, matches)
            initial = [("ADDED", item) for item in items]
        else:
            since = int(since_text)
        self._start_stream("application/json")
        try:
            for kind, obj in initial:
                self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            if query.get("sendInitialEvents") == "true":
                # The streaming list's end (watch-list): a bookmark at the listed version.
                api_version, kind_name, _ = KINDS[resource]
                bookmark = {
                    "kind": kind_name,
                    "apiVersion": api_version,
                    "metadata": {
                        "resourceVersion": str(since),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }
                self._chunk(json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n")
            for change in store.changes(resource, since, matches, deadline):
                if self.api.cut != cut:
                    break
                if change is not None:
                    kind, obj = change
                    self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
        except ApiError as error:
            self._chunk(json.dumps({"type": "ERROR", "object": error.status()}).encode() + b"\n")
        self._end_stream()
        self.close_connection = self.api.cut != cut

    def _logs(self, ns: str, name: str, query: dict[str, str]) -> None:
        store, cluster = self.api.store, self.api.cluster
        pod = store.get("pods", ns, name)
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = query.get("container") or (containers[0] if len(containers) == 1 else "")
        if not container:
            raise ApiError(
                400,
                "BadRequest",
                f"a container name must be specified for pod {name}, "
                f"choose one of: [{' '.join(containers)}]",
            )
        key = (ns, name, container)
        if key not in cluster.logs:
            reason = _waiting_reason(pod, container)
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: {reason}',
            )
        limit = int(query.get("limitBytes") or 0)
        tail = query.get("tailLines")
        if query.get("follow") not in ("true", "1"):
            text = "".join(line + "\n" for line in cluster.logs[key]).encode()
            self._send(200, text[:limit] if limit else text, "text/plain")
            return
        self._start_stream("text/plain")
        with cluster.lock:
            # tailLines=N starts N lines from the end (0: only what comes from now on).
            sent = max(0, len(cluster.logs[key]) - int(tail)) if tail is not None else 0
            if since := query.get("sinceSeconds"):
                cutoff = time.time() - int(since)
                sent = max(sent, sum(1 for t in cluster.log_times[key] if t < cutoff))
        while True:
            with cluster.lock:
                lines = cluster.logs.get(key, [])[sent:]
            for line in lines:
                self._chunk(line.encode() + b"\n")
            sent += len(lines)
            try:
                pod = store.get("pods", ns, name)
            except ApiError:
                break
            if not lines and _terminated(pod, container):
                with cluster.lock:
                    if len(cluster.logs.get(key, [])) == sent:
                        break
            with cluster.lock:
                if len(cluster.logs.get(key, [])) == sent:
                    cluster.lock.wait(0.2)
        self._end_stream()

    def _access_review(self, body: Obj) -> None:
        attributes = (body.get("spec") or {}).get("resourceAttributes") or {}
        allowed = self.api.allowed(
            attributes.get("verb", ""),
            attributes.get("resource", ""),
            attributes.get("subresource", ""),
        )
        status: Obj = {"allowed": allowed}
        if not allowed:
            status["reason"] = "no RBAC policy matched"
        self._send(
            201,
            {
                **body,
                "kind": "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "status": status,
            },
        )

    # --- test controls -----------------------------------------------------------------

    def _control(self, method: str, path: str, query: dict[str, str]) -> None:
        parts = path.strip("/").split("/")[1:]
        api = self.api
        if parts[:1] == ["release"] and len(parts) == 3:
            api.cluster.release(parts[1], parts[2], int(query.get("exit", "0")))
        elif parts == ["compact"]:
            api.store.compact()
        elif parts == ["cut-watches"]:
            api.cut += 1
            with api.store.lock:
                api.store.lock.notify_all()
        elif parts == ["deny"]:
            api.denied.add(query["rule"])
        elif parts == ["requests"]:
            self._send(200, api.requests)
            return
        else:
            raise ApiError(404, "NotFound", f"no control {path}")
        self._send(200, {"ok": True})


def _container_statuses(pod: Obj) -> list[Obj]:
    status = pod.get("status", {})
    return [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]


def _waiting_reason(pod: Obj, container: str) -> str:
    for entry in _container_statuses(pod):
        if entry["name"] == container and "waiting" in entry.get("state", {}):
            return str(entry["state"]["waiting"].get("reason", "ContainerCreating"))
    return "ContainerCreating"


def _terminated(pod: Obj, container: str) -> bool:
    return any(
        entry["name"] == container and "terminated" in entry.get("state", {})
        for entry in _container_statuses(pod)
    )


def serve(api: FakeApi, port: int = 0) -> ThreadingHTTPServer:
    """A started-later server bound to 127.0.0.1:``port`` (0: any free port)."""
    handler = type("BoundHandler", (Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server
