"""The fake API server's streamed answers: watches (chunked JSON events) and pod logs
(followed until the container ends)."""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from tests.kubernetes.fakeapi.state import FakeApi
from tests.kubernetes.fakeapi.store import KINDS, ApiError, Obj


class Responder(Protocol):
    """How an answer is written: at once, or as a chunked stream."""

    def reply(self, code: int, body: Any, content_type: str = "application/json") -> None: ...
    def start_stream(self, content_type: str) -> None: ...
    def chunk(self, data: bytes) -> None: ...
    def end_stream(self) -> None: ...


def watch(api: FakeApi, out: Responder, resource: str, matches: Any, query: dict[str, str]) -> bool:
    """Stream the changes of ``matches`` (after a list when asked) until the timeout or a
    cut; whether to close the connection afterwards."""
    store = api.store
    since_text = query.get("resourceVersion") or "0"
    timeout = min(float(query.get("timeoutSeconds") or api.watch_timeout), api.watch_timeout)
    deadline = time.monotonic() + timeout
    cut = api.cut
    initial: list[tuple[str, Obj]] = []
    if since_text == "0":
        items, since = store.select(resource, matches)
        initial = [("ADDED", item) for item in items]
    else:
        since = int(since_text)
    out.start_stream("application/json")
    try:
        for kind, obj in initial:
            out.chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
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
            out.chunk(json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n")
        for change in store.changes(resource, since, matches, deadline):
            if api.cut != cut:
                break
            if change is not None:
                kind, obj = change
                if resource == "pods":
                    time.sleep(api.pod_watch_lag)
                out.chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
    except ApiError as error:
        out.chunk(json.dumps({"type": "ERROR", "object": error.status()}).encode() + b"\n")
    out.end_stream()
    return api.cut != cut


def logs(api: FakeApi, out: Responder, ns: str, name: str, query: dict[str, str]) -> None:
    """A container's log, whole or followed until the container has ended."""
    store, cluster = api.store, api.cluster
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
        out.reply(200, text[:limit] if limit else text, "text/plain")
        return
    out.start_stream("text/plain")
    cut = api.log_cut
    with cluster.lock:
        # tailLines=N starts N lines from the end (0: only what comes from now on).
        sent = max(0, len(cluster.logs[key]) - int(tail)) if tail is not None else 0
        if since := query.get("sinceSeconds"):
            cutoff = time.time() - int(since)
            sent = max(sent, sum(1 for t in cluster.log_times[key] if t < cutoff))
    while api.log_cut == cut:
        with cluster.lock:
            lines = cluster.logs.get(key, [])[sent:]
        for line in lines:
            out.chunk(line.encode() + b"\n")
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
            if len(cluster.logs.get(key, [])) == sent and api.log_cut == cut:
                cluster.lock.wait(0.2)
    out.end_stream()


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
