"""A kubelet (and scheduler) stand-in: one node that runs no containers, acting only
through the real API, as ``python -m tests.kubernetes.real.kubelet``.

As the scheduler (``system:kube-scheduler``) it binds pending pods to the node, or marks
them ``PodScheduled=False/Unschedulable`` when their ``nodeSelector`` does not match
the node's labels. As the kubelet (``system:node:<name>``, under the Node authorizer
and NodeRestriction) it registers the node, runs each bound pod's containers as
scripted below, reports their status, and serves their logs over TLS on the node's
kubelet port (``/containerLogs/...``, ``follow`` and ``sinceSeconds``), where the API
server's ``pods/log`` looks for them. Deleted pods are stopped (exit 143) and removed
with a zero grace period, as a kubelet confirms a deletion.

What a container does is decided by its image, as if images had known behaviour:

=====================  =========================================================
``fake/exit-N``         runs, then exits N
``fake/oom``            OOM-killed (137, ``OOMKilled``)
``fake/pull-error``     ``ErrImagePull``, then ``ImagePullBackOff``, for ever
``fake/bad-image``      ``InvalidImageName``
``fake/evicted``        the pod is evicted while running
``fake/hold``           runs until its pod is annotated ``ozw.test/exit: "N"``;
                        meanwhile logs each new value of ``ozw.test/say``
anything else           exits 0
=====================  =========================================================

A task container logs ``fake agent: TASK_ID=<value>``, its arguments, ``working`` and
``exiting N``. Variables from ``secretKeyRef`` are read from their Secret (missing:
``CreateContainerConfigError``); a missing Secret volume is a ``FailedMount`` event
with the pod left pending. A restartable init container (a native sidecar) runs
beside the main containers; ``fake/exit-N`` makes it exit once and be restarted.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Obj = dict[str, Any]
EXIT_ANNOTATION = "ozw.test/exit"
SAY_ANNOTATION = "ozw.test/say"
STEP = 0.1
_EXIT = re.compile(r"fake/exit-(\d+)")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def behaviour(image: str) -> str:
    """The image's repository (``fake/exit-3`` of ``fake/exit-3:latest``)."""
    name = image.split("@")[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


class Gone(Exception):
    """The pod was deleted (or is being deleted): stop running it."""


class Api:
    def __init__(self, server: str, ca: str, tokens: dict[str, str]) -> None:
        self.server = server
        self.tokens = tokens
        self.context = ssl.create_default_context(cafile=ca)

    def _request(
        self, method: str, path: str, body: Any, user: str, content_type: str
    ) -> urllib.request.Request:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.server}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.tokens[user]}")
        request.add_header("Content-Type", content_type)
        return request

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: str = "node",
        content_type: str = "application/merge-patch+json",
    ) -> Any:
        request = self._request(method, path, body, user, content_type)
        with urllib.request.urlopen(request, timeout=30, context=self.context) as response:
            return json.load(response)

    def informer(self, path: str, user: str, handle: Callable[[str, Obj], None]) -> None:
        """List, then watch, for ever; relist after any break (handlers are idempotent)."""
        join = "&" if "?" in path else "?"
        while True:
            try:
                listing = self.call("GET", path, user=user)
                for item in listing["items"]:
                    handle("SYNC", item)
                version = listing["metadata"]["resourceVersion"]
                watch = f"{path}{join}watch=1&timeoutSeconds=60&resourceVersion={version}"
                request = self._request("GET", watch, None, user, "application/json")
                with urllib.request.urlopen(request, timeout=90, context=self.context) as stream:
                    for line in stream:
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            break
                        handle(event["type"], event["object"])
            except (OSError, ValueError) as exc:
                print(f"watch {path}: {exc}; listing again", flush=True)
                time.sleep(1)


class Logs:
    """Every container's log lines with their times, and which have ended."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
        self.ended: set[tuple[str, str, str]] = set()
        self.lock = threading.Condition()

    def open(self, key: tuple[str, str, str]) -> None:
        with self.lock:
            self.lines.setdefault(key, [])
            self.ended.discard(key)

    def write(self, key: tuple[str, str, str], line: str) -> None:
        with self.lock:
            self.lines.setdefault(key, []).append((time.time(), line))
            self.lock.notify_all()

    def end(self, key: tuple[str, str, str]) -> None:
        with self.lock:
            self.ended.add(key)
            self.lock.notify_all()

    def read(self, key: tuple[str, str, str], since: float, follow: bool) -> Iterator[str]:
        sent = 0
        while True:
            with self.lock:
                lines = self.lines[key]
                fresh, sent = lines[sent:], len(lines)
                ended = key in self.ended
            for at, line in fresh:
                if at >= since:
                    yield line
            if ended or not follow:
                return
            with self.lock:
                if len(self.lines[key]) == sent and key not in self.ended:
                    self.lock.wait(1.0)


def log_handler(logs: Logs) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            query = dict(urllib.parse.parse_qsl(url.query))
            if len(parts) != 4 or parts[0] != "containerLogs":
                self.send_error(404)
                return
            key = (parts[1], parts[2], parts[3])
            with logs.lock:
                known = key in logs.lines
            if not known:
                body = f'container "{key[2]}" in pod "{key[1]}" is waiting to start'.encode()
                self.send_response(400)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            since = time.time() - float(query["sinceSeconds"]) if "sinceSeconds" in query else 0
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            try:
                for line in logs.read(key, since, query.get("follow") == "true"):
                    self.wfile.write(f"{line}\n".encode())
                    self.wfile.flush()
            except OSError:
                pass  # the reader went away

        def log_message(self, format: str, *args: Any) -> None:
            print("logs:", format % args, flush=True)

    return Handler


class Node:
    def __init__(self, api: Api, name: str, logs: Logs) -> None:
        self.api = api
        self.name = name
        self.logs = logs
        self.labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
        self.pods: dict[str, Obj] = {}
        """The latest version of each running pod, by uid (its runner reads it)."""
        self.lock = threading.Lock()

    def register(self, port: int) -> None:
        try:
            self.api.call(
                "POST",
                "/api/v1/nodes",
                {"metadata": {"name": self.name, "labels": self.labels}},
                content_type="application/json",
            )
        except urllib.error.HTTPError as error:
            if error.code != 409:
                raise
        resources = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        self.api.call(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet stand-in is posting ready status",
                            "lastHeartbeatTime": now(),
                            "lastTransitionTime": now(),
                        }
                    ],
                    "nodeInfo": {"kubeletVersion": "v1.37.2-standin"},
                }
            },
        )

    # -- as the scheduler --

    def schedule(self, event: str, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        if event == "DELETED" or meta.get("deletionTimestamp") or spec.get("nodeName"):
            return
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        wanted = spec.get("nodeSelector") or {}
        try:
            if any(self.labels.get(k) != v for k, v in wanted.items()):
                conditions = pod.get("status", {}).get("conditions") or []
                if not any(c.get("reason") == "Unschedulable" for c in conditions):
                    condition = {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 node(s) didn't match "
                        "Pod's node affinity/selector.",
                        "lastTransitionTime": now(),
                    }
                    self.api.call(
                        "PATCH",
                        f"{path}/status",
                        {"status": {"conditions": [condition]}},
                        user="scheduler",
                    )
                return
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
            }
            self.api.call(
                "POST",
                f"{path}/binding",
                binding,
                user="scheduler",
                content_type="application/json",
            )
        except urllib.error.HTTPError as error:
            print(f"scheduling {meta['name']}: {error.code} {error.read()[:300]!r}", flush=True)

    # -- as the kubelet --

    def pod_changed(self, event: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            known = uid in self.pods
            if event == "DELETED":
                self.pods.pop(uid, None)
                return
            self.pods[uid] = pod
        if not known:
            threading.Thread(target=PodRunner(self, pod).run, daemon=True).start()

    def latest(self, uid: str) -> Obj | None:
        with self.lock:
            return self.pods.get(uid)


class PodRunner:
    """Runs one pod to its end, then removes it once it is deleted."""

    def __init__(self, node: Node, pod: Obj) -> None:
        self.node, self.api = node, node.api
        meta = pod["metadata"]
        self.uid, self.namespace, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"
        self.spec = pod["spec"]
        self.status: Obj = {"phase": "Pending", "startTime": now()}
        self.inits: dict[str, Obj] = {}
        self.mains: dict[str, Obj] = {}
        self.sidecars = [
            c for c in self.spec.get("initContainers", []) if c.get("restartPolicy") == "Always"
        ]
        containers = self.spec["containers"]
        self.main = next((c for c in containers if c["name"] == "task"), containers[0])
        """The container that logs like an agent and decides the pod's outcome."""

    # -- the API --

    def pod(self) -> Obj:
        """The pod as last seen; raises Gone once it is being deleted."""
        pod = self.node.latest(self.uid)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            raise Gone
        return pod

    def report(self) -> None:
        status = dict(self.status)
        for key, statuses, containers in (
            ("initContainerStatuses", self.inits, self.spec.get("initContainers", [])),
            ("containerStatuses", self.mains, self.spec["containers"]),
        ):
            if containers and all(c["name"] in statuses for c in containers):
                status[key] = [statuses[c["name"]] for c in containers]
        try:
            self.api.call("PATCH", f"{self.path}/status", {"status": status})
        except urllib.error.HTTPError as error:
            print(f"status of {self.name}: {error.code} {error.read()[:400]!r}", flush=True)
            if error.code == 404:
                raise Gone from None

    def event(self, kind: str, reason: str, message: str) -> None:
        event = {
            "metadata": {"generateName": f"{self.name}."},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "count": 1,
            "source": {"component": "kubelet", "host": self.node.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node.name,
        }
        try:
            self.api.call(
                "POST",
                f"/api/v1/namespaces/{self.namespace}/events",
                event,
                content_type="application/json",
            )
        except urllib.error.HTTPError as error:
            print(f"event of {self.name}: {error.code} {error.read()[:300]!r}", flush=True)

    def secret(self, name: str) -> Obj | None:
        """A Secret the pod uses; the Node authorizer learns of the pod's binding a
        moment after it happens, so a refusal is retried briefly."""
        for _ in range(50):
            try:
                return self.api.call("GET", f"/api/v1/namespaces/{self.namespace}/secrets/{name}")  # type: ignore[no-any-return]
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    return None
                if error.code != 403:
                    raise
            time.sleep(STEP)
            self.pod()
        raise Gone

    def wait(self, seconds: float = STEP) -> Obj:
        time.sleep(seconds)
        return self.pod()

    # -- containers --

    def state(self, container: Obj, state: Obj, *, restarts: int = 0, ready: bool = False) -> Obj:
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "containerID": f"standin://{self.uid}/{container['name']}",
            "ready": ready,
            "started": "running" in state,
            "restartCount": restarts,
            "state": state,
        }

    def env(self, container: Obj) -> dict[str, str] | str:
        """The container's environment, or why it cannot be created."""
        env: dict[str, str] = {}
        for entry in container.get("env", []):
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                env[entry["name"]] = entry.get("value", "")
                continue
            secret = self.secret(ref["name"])
            if secret is None:
                return f'secret "{ref["name"]}" not found'
            data = secret.get("data") or {}
            if ref["key"] not in data:
                return f"couldn't find key {ref['key']} in Secret {self.namespace}/{ref['name']}"
            env[entry["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return env

    def missing_volume(self) -> str | None:
        for volume in self.spec.get("volumes", []):
            source = volume.get("secret")
            if source and not source.get("optional") and self.secret(source["secretName"]) is None:
                return (
                    f'MountVolume.SetUp failed for volume "{volume["name"]}" : '
                    f'secret "{source["secretName"]}" not found'
                )
        return None

    def run(self) -> None:
        try:
            self.pod()
            self._run()
        except Gone:
            pass
        except Exception as exc:  # a stand-in bug must show in its log
            print(f"pod {self.name}: {exc!r}", flush=True)
        self.finish()

    def _run(self) -> None:
        if (problem := self.missing_volume()) is not None:
            self.event("Warning", "FailedMount", problem)
            while True:
                self.wait(1.0)
        for container in self.spec.get("initContainers", []):
            self.inits[container["name"]] = self.state(
                container, {"waiting": {"reason": "PodInitializing"}}
            )
        for container in self.spec["containers"]:
            self.mains[container["name"]] = self.state(
                container, {"waiting": {"reason": "PodInitializing"}}
            )
        self.report()
        for container in self.spec.get("initContainers", []):
            if container in self.sidecars:
                self.start(container, self.inits)
                continue
            code = self.start(container, self.inits)
            if code is None:
                return
            if code != 0:
                self.status["phase"] = "Failed"
            self.terminate(container, self.inits, code)
            if code != 0:
                return
        self.status["phase"] = "Running"
        for container in self.spec["containers"]:
            self.mains[container["name"]] = self.state(
                container, {"waiting": {"reason": "ContainerCreating"}}
            )
        main = self.main
        others = [c for c in self.spec["containers"] if c is not main]
        for container in others:
            self.start(container, self.mains)
        code = self.start(main, self.mains)
        if code is None:
            return
        code = self.work(main, code)
        for container in others:
            self.terminate(container, self.mains, 0)
        # The phase comes with the last regular container's end, in one status update
        # (a kubelet computes both from the same sync); sidecars do not count.
        self.status["phase"] = "Succeeded" if code == 0 else "Failed"
        self.terminate(main, self.mains, code, oom=behaviour(main.get("image", "")) == "fake/oom")
        for container in self.sidecars:
            self.terminate(container, self.inits, 143)

    def start(self, container: Obj, statuses: dict[str, Obj]) -> int | None:
        """Start a container (reported running); its exit code to come, or None when it
        cannot start (reported waiting)."""
        name, image = container["name"], container.get("image", "")
        kind = behaviour(image)
        waiting = {
            "fake/bad-image": ("InvalidImageName", f'Failed to apply default image tag "{image}"'),
            "fake/pull-error": ("ErrImagePull", f'failed to pull image "{image}": not found'),
        }
        if kind in waiting:
            reason, message = waiting[kind]
            statuses[name] = self.state(
                container, {"waiting": {"reason": reason, "message": message}}
            )
            self.event("Warning", "Failed", f"Failed to pull image {image!r}: {message}")
            self.report()
            if kind == "fake/pull-error":
                self.wait(1.0)
                statuses[name] = self.state(
                    container,
                    {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": f'Back-off pulling image "{image}"',
                        }
                    },
                )
                self.report()
            return None
        env = self.env(container)
        if isinstance(env, str):
            statuses[name] = self.state(
                container, {"waiting": {"reason": "CreateContainerConfigError", "message": env}}
            )
            self.report()
            return None
        key = (self.namespace, self.name, name)
        self.node.logs.open(key)
        statuses[name] = self.state(container, {"running": {"startedAt": now()}}, ready=True)
        if container is self.main:
            self.node.logs.write(key, f"fake agent: TASK_ID={env.get('TASK_ID', '')}")
            self.node.logs.write(key, "fake agent: args " + " ".join(container.get("args", [])))
        self.report()
        self.wait()
        if container in self.sidecars and (match := _EXIT.fullmatch(kind)):
            # A native sidecar that exits is restarted: its exit decides nothing.
            last = {"terminated": {"exitCode": int(match.group(1)), "reason": "Error"}}
            statuses[name] = self.state(
                container, {"running": {"startedAt": now()}}, restarts=1, ready=True
            )
            statuses[name]["lastState"] = last
            self.report()
        if match := _EXIT.fullmatch(kind):
            return int(match.group(1))
        return 137 if kind == "fake/oom" else 0

    def work(self, main: Obj, code: int) -> int:
        """The task container's run: log, and wait for a release when it holds."""
        key = (self.namespace, self.name, main["name"])
        self.node.logs.write(key, "fake agent: working")
        kind = behaviour(main.get("image", ""))
        if kind == "fake/evicted":
            self.wait()
            self.status.update(
                reason="Evicted",
                message="The node was low on resource: memory. Threshold quantity: 100Mi.",
                conditions=[
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "TerminationByKubelet",
                        "message": "The node was low on resource: memory.",
                        "lastTransitionTime": now(),
                    }
                ],
            )
            return 137
        if kind == "fake/hold":
            said = None
            while (exit_code := self.released()) is None:
                line = (self.pod()["metadata"].get("annotations") or {}).get(SAY_ANNOTATION)
                if line is not None and line != said:
                    self.node.logs.write(key, said := line)
                self.wait(0.2)
            code = exit_code
        self.wait()
        self.node.logs.write(key, f"fake agent: exiting {code}")
        return code

    def released(self) -> int | None:
        annotations = self.pod()["metadata"].get("annotations") or {}
        value = annotations.get(EXIT_ANNOTATION)
        return None if value is None else int(value)

    def terminate(
        self, container: Obj, statuses: dict[str, Obj], code: int, *, oom: bool = False
    ) -> None:
        name = container["name"]
        previous = statuses.get(name, {})
        started = (previous.get("state") or {}).get("running", {}).get("startedAt", now())
        reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        terminated = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now()}
        statuses[name] = self.state(
            container, {"terminated": terminated}, restarts=previous.get("restartCount", 0)
        )
        if "lastState" in previous:
            statuses[name]["lastState"] = previous["lastState"]
        self.node.logs.end((self.namespace, self.name, name))
        self.report()

    def finish(self) -> None:
        """Wait for the pod's deletion, stop what still runs, confirm the deletion."""
        while True:
            pod = self.node.latest(self.uid)
            if pod is None:
                return
            if pod["metadata"].get("deletionTimestamp"):
                break
            time.sleep(STEP)
        stopped = False
        for statuses, containers in (
            (self.inits, self.spec.get("initContainers", [])),
            (self.mains, self.spec["containers"]),
        ):
            for container in containers:
                state = statuses.get(container["name"], {}).get("state") or {}
                if "running" in state:
                    self.terminate(container, statuses, 143)
                    stopped = True
        if stopped or self.status["phase"] in ("Pending", "Running"):
            self.status["phase"] = "Failed" if stopped else self.status["phase"]
            if self.status["phase"] == "Pending":
                self.status["phase"] = "Failed"
            try:
                self.report()
            except Gone:
                return
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        try:
            self.api.call("DELETE", self.path, options, content_type="application/json")
        except urllib.error.HTTPError as error:
            if error.code not in (404, 409):
                print(f"deleting {self.name}: {error.code} {error.read()[:300]!r}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    for option in ("--server", "--ca", "--cert", "--key", "--node", "--tokens"):
        parser.add_argument(option, required=True)
    args = parser.parse_args()
    with open(args.tokens) as file:
        tokens = json.load(file)
    api = Api(args.server, args.ca, tokens)
    logs = Logs()
    server = ThreadingHTTPServer(("127.0.0.1", 0), log_handler(logs))
    server.daemon_threads = True
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert, args.key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    node = Node(api, args.node, logs)
    node.register(server.server_address[1])
    threading.Thread(
        target=api.informer,
        args=("/api/v1/pods?fieldSelector=spec.nodeName%3D", "scheduler", node.schedule),
        daemon=True,
    ).start()
    print(f"node {args.node} registered, logs on port {server.server_address[1]}", flush=True)
    api.informer(
        f"/api/v1/pods?fieldSelector=spec.nodeName%3D{args.node}", "node", node.pod_changed
    )


if __name__ == "__main__":
    main()
