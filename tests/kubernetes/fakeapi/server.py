"""The fake Kubernetes API server: real API paths, JSON, Status bodies and watches.

Serves plain HTTP on 127.0.0.1 (a kubeconfig ``server: http://127.0.0.1:<port>``),
one thread per connection. What it speaks (enough for kubectl and lightkube):
discovery (``/version``, ``/api``, ``/apis``, group versions); create / get / list /
watch / patch (merge) / delete of Jobs, Pods, Secrets and Events with label and field
selectors, resource versions, 404 / 409 / 410 / 422 ``Status`` bodies, ``dryRun=All``,
propagation policies with owner-reference garbage collection; pod logs
(``follow``, ``container``, ``limitBytes``); ``SelfSubjectAccessReview``. The Job
controller and kubelet are :mod:`~tests.kubernetes.fakeapi.kubelet`; discovery is in
:mod:`~tests.kubernetes.fakeapi.discovery`, deletion and garbage collection in
:mod:`~tests.kubernetes.fakeapi.deletion`, watches and logs in
:mod:`~tests.kubernetes.fakeapi.streams`.

Control endpoints for tests live under ``/_fake/`` (not part of the Kubernetes API).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from tests.kubernetes.fakeapi.deletion import delete, init_job
from tests.kubernetes.fakeapi.discovery import discovery_body, merge_patch, strict_check
from tests.kubernetes.fakeapi.protobuf import access_review
from tests.kubernetes.fakeapi.state import FakeApi
from tests.kubernetes.fakeapi.store import KINDS, ApiError, Obj
from tests.kubernetes.fakeapi.streams import logs, watch

PROTOBUF = "application/vnd.kubernetes.protobuf"
_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/v1)"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[a-z]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?$"
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: ClassVar[FakeApi]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read /_fake/requests instead

    # --- plumbing ------------------------------------------------------------------

    def reply(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, error: ApiError) -> None:
        self.reply(error.code, error.status())

    def start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_stream(self) -> None:
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
            body = discovery_body(url.path) if method == "GET" else None
            if body is not None:
                self.reply(200, body)
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

    # --- resources -------------------------------------------------------------------

    def _resource(self, method: str, parts: dict[str, str | None], query: dict[str, str]) -> None:
        resource, ns, name, sub = parts["resource"] or "", parts["ns"], parts["name"], parts["sub"]
        if resource == "selfsubjectaccessreviews" and method == "POST":
            self._access_review(self._body())
            return
        if resource == "namespaces" and method == "GET" and ns is None and name:
            # Every namespace exists (kubectl asks after a 404 to word its error).
            self.reply(
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
                self.close_connection = watch(self.api, self, resource, matches, query)
            else:
                items, version = store.select(resource, matches)
                api_version, kind, _ = KINDS[resource]
                self.reply(
                    200,
                    {
                        "kind": f"{kind}List",
                        "apiVersion": api_version,
                        "metadata": {"resourceVersion": str(version)},
                        "items": items,
                    },
                )
        elif method == "GET" and sub == "log" and resource == "pods" and ns and name:
            logs(self.api, self, ns, name, query)
        elif method == "GET" and ns and name:
            self.reply(200, store.get(resource, ns, name))
        elif method == "POST" and ns and name is None:
            body = self._body()
            if query.get("fieldValidation") == "Strict":
                strict_check(body)
            created = store.create(resource, ns, body, dry_run=dry_run)
            if resource == "jobs" and not dry_run:
                init_job(self.api, created)
                created = store.get(resource, ns, created["metadata"]["name"])
            self.reply(201, created)
        elif method == "PATCH" and ns and name:
            patch = self._body()
            if dry_run:
                self.reply(200, merge_patch(store.get(resource, ns, name), patch))
            else:
                self.reply(
                    200, store.update(resource, ns, name, lambda o: o.update(merge_patch(o, patch)))
                )
        elif method == "DELETE" and ns and name:
            body = self._body()
            policy = query.get("propagationPolicy") or body.get("propagationPolicy")
            self.reply(200, delete(self.api, resource, ns, name, policy, dry_run))
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

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
        self.reply(
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
        elif parts[:1] == ["say"] and len(parts) == 3:
            api.cluster.say(parts[1], parts[2], query["line"])
        elif parts == ["cut-logs"]:
            with api.cluster.lock:
                api.log_cut += 1
                api.cluster.lock.notify_all()
        elif parts == ["cut-watches"]:
            api.cut += 1
            with api.store.lock:
                api.store.lock.notify_all()
        elif parts == ["pod-watch-lag"]:
            api.pod_watch_lag = float(query["seconds"])
        elif parts == ["deny"]:
            api.denied.add(query["rule"])
        elif parts == ["requests"]:
            self.reply(200, api.requests)
            return
        else:
            raise ApiError(404, "NotFound", f"no control {path}")
        self.reply(200, {"ok": True})


def serve(api: FakeApi, port: int = 0) -> ThreadingHTTPServer:
    """A started-later server bound to 127.0.0.1:``port`` (0: any free port)."""
    handler = type("BoundHandler", (Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server
