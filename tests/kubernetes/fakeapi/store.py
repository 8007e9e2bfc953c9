"""The fake API server's object store: resource versions, selectors, watch history.

Like etcd behind a real API server: every change bumps one global resource version
and is recorded; a watch replays the changes after the version it asks for, and a
version older than the retained history is answered with 410 Gone ("too old
resource version"), which is what makes clients restart from a fresh list.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

Obj = dict[str, Any]
HISTORY: Final = 10_000

KINDS: Final[dict[str, tuple[str, str, str]]] = {
    # resource: (apiVersion, kind, group)
    "jobs": ("batch/v1", "Job", "batch"),
    "pods": ("v1", "Pod", ""),
    "secrets": ("v1", "Secret", ""),
    "events": ("v1", "Event", ""),
}


class ApiError(Exception):
    """An error the server answers with a ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def not_found(resource: str, name: str) -> ApiError:
    group = KINDS[resource][2]
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(
        404,
        "NotFound",
        f'{qualified} "{name}" not found',
        {"name": name, "group": group, "kind": resource},
    )


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- selectors -------------------------------------------------------------------

_SET_RE: Final = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


LabelTest = Callable[[dict[str, str]], bool]


def _label_test(term: str) -> LabelTest:
    """One term of a label selector as a predicate."""
    if match := _SET_RE.match(term):
        key, op = match.group(1), match.group(2)
        allowed = {v.strip() for v in match.group(3).split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in allowed
        return lambda labels: labels.get(key) not in allowed
    if "!=" in term:
        key, value = (part.strip() for part in term.split("!=", 1))
        return lambda labels: labels.get(key) != value
    if "=" in term:
        key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
        return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        absent = term[1:].strip()
        return lambda labels: absent not in labels
    return lambda labels: term in labels


def label_matcher(selector: str | None) -> LabelTest:
    """A predicate for a label selector (``a=b,c!=d,e,!f,g in (h,i)``)."""
    tests = [_label_test(raw.strip()) for raw in _split_selector(selector or "")]
    return lambda labels: all(test(labels) for test in tests)


def _field(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return str(value)


def _field_test(term: str) -> Callable[[Obj], bool]:
    negate = "!=" in term
    key, value = (p.strip() for p in term.replace("!=", "=").replace("==", "=").split("=", 1))
    if negate:
        return lambda obj: _field(obj, key) != value
    return lambda obj: _field(obj, key) == value


def field_matcher(selector: str | None) -> Callable[[Obj], bool]:
    """A predicate for a field selector (``metadata.name=x,involvedObject.uid=y``)."""
    tests = [_field_test(term) for term in (selector or "").split(",") if term.strip()]
    return lambda obj: all(test(obj) for test in tests)


# --- the store ---------------------------------------------------------------------


class Store:
    """Objects by (resource, namespace, name), with a change history for watches."""

    def __init__(self, history: int = HISTORY) -> None:
        self.lock = threading.Condition()
        self.version = 1
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.history: collections.deque[tuple[int, str, str, Obj]] = collections.deque(
            maxlen=history
        )
        self.oldest = 1
        """The oldest resource version a watch may still start from."""

    def _record(self, kind: str, resource: str, obj: Obj) -> None:
        if self.history.maxlen and len(self.history) == self.history.maxlen:
            self.oldest = self.history[0][0] + 1
        self.history.append((self.version, kind, resource, copy.deepcopy(obj)))
        self.lock.notify_all()

    def compact(self) -> None:
        """Forget the history (an etcd compaction): older watches get 410 Gone."""
        with self.lock:
            self.history.clear()
            self.oldest = self.version + 1
            self.lock.notify_all()

    def create(self, resource: str, namespace: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        with self.lock:
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            name = meta.get("name")
            if not name:
                raise ApiError(422, "Invalid", "metadata.name: Required value: name is required")
            key = (resource, namespace, name)
            if key in self.objects:
                group = KINDS[resource][2]
                qualified = f"{resource}.{group}" if group else resource
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{qualified} "{name}" already exists',
                    {"name": name, "group": group, "kind": resource},
                )
            api_version, kind, _ = KINDS[resource]
            obj["apiVersion"], obj["kind"] = api_version, kind
            meta.update(
                namespace=namespace,
                uid=str(uuid.uuid4()),
                creationTimestamp=now(),
                generation=1,
            )
            if resource == "secrets" and "stringData" in obj:
                import base64

                data = obj.setdefault("data", {})
                for k, v in obj.pop("stringData").items():
                    data[k] = base64.b64encode(v.encode()).decode()
            if dry_run:
                meta["resourceVersion"] = str(self.version)
                return copy.deepcopy(obj)
            self.version += 1
            meta["resourceVersion"] = str(self.version)
            self.objects[key] = obj
            self._record("ADDED", resource, obj)
            return copy.deepcopy(obj)

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        with self.lock:
            obj = self.objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(resource, name)
            return copy.deepcopy(obj)

    def update(
        self, resource: str, namespace: str, name: str, change: Callable[[Obj], None]
    ) -> Obj:
        """Apply ``change`` to the stored object; records MODIFIED."""
        with self.lock:
            obj = self.objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(resource, name)
            change(obj)
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            self._record("MODIFIED", resource, obj)
            return copy.deepcopy(obj)

    def delete(self, resource: str, namespace: str, name: str) -> Obj:
        with self.lock:
            obj = self.objects.pop((resource, namespace, name), None)
            if obj is None:
                raise not_found(resource, name)
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            self._record("DELETED", resource, obj)
            return copy.deepcopy(obj)

    def matching(
        self, resource: str, namespace: str | None, labels: str | None, fields: str | None
    ) -> Callable[[Obj], bool]:
        match_labels, match_fields = label_matcher(labels), field_matcher(fields)

        def matches(obj: Obj) -> bool:
            meta = obj["metadata"]
            return (
                (namespace is None or meta.get("namespace") == namespace)
                and match_labels(meta.get("labels") or {})
                and match_fields(obj)
            )

        return matches

    def select(self, resource: str, matches: Callable[[Obj], bool]) -> tuple[list[Obj], int]:
        with self.lock:
            items = [
                copy.deepcopy(o)
                for (r, _, _), o in sorted(self.objects.items())
                if r == resource and matches(o)
            ]
            return items, self.version

    def owned_by(self, uid: str) -> list[tuple[str, str, str]]:
        with self.lock:
            return [
                key
                for key, obj in self.objects.items()
                if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))
            ]

    def changes(
        self, resource: str, since: int, matches: Callable[[Obj], bool], deadline: float
    ) -> Iterator[tuple[str, Obj] | None]:
        """Changes after ``since`` as they happen; None when waiting timed out once.

        Raises ApiError 410 when ``since`` is older than the retained history.
        """
        import time

        seen = since
        while True:
            with self.lock:
                if seen + 1 < self.oldest:
                    raise ApiError(
                        410,
                        "Expired",
                        f"too old resource version: {since} ({self.oldest - 1})",
                    )
                batch = [
                    (kind, obj)
                    for version, kind, r, obj in self.history
                    if version > seen and r == resource and matches(obj)
                ]
                seen = self.version
                if not batch:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self.lock.wait(min(remaining, 0.5))
            if batch:
                yield from batch
            else:
                yield None
