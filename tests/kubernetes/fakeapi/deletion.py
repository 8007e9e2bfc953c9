"""Creation defaults and deletion of the fake API server's objects: a Job's defaults
(handed to the Job controller), propagation policies, and the garbage collector that
removes what an object owns."""

from __future__ import annotations

import contextlib
import threading
import time

from tests.kubernetes.fakeapi.state import FakeApi
from tests.kubernetes.fakeapi.store import ApiError, Obj, now


def init_job(api: FakeApi, job: Obj) -> None:
    """Fill a created Job's defaults (as the API server does) and start its controller."""
    uid = job["metadata"]["uid"]

    def defaults(stored: Obj) -> None:
        stored["spec"].setdefault(
            "selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        )
        stored["spec"].setdefault("completions", 1)
        stored["spec"].setdefault("parallelism", 1)
        stored.setdefault("status", {})

    job = api.store.update("jobs", job["metadata"]["namespace"], job["metadata"]["name"], defaults)
    api.cluster.job_created(job)


def delete(
    api: FakeApi, resource: str, ns: str, name: str, policy: str | None, dry_run: bool
) -> Obj:
    """Delete an object under its propagation ``policy``; the object as answered."""
    store = api.store
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
            target=_collect, args=(api, resource, ns, name, uid, True), daemon=True
        ).start()
        return marked
    deleted = store.delete(resource, ns, name)
    if policy == "Background":
        threading.Thread(
            target=_collect, args=(api, resource, ns, name, uid, False), daemon=True
        ).start()
    return deleted


def _collect(api: FakeApi, resource: str, ns: str, name: str, uid: str, owner_last: bool) -> None:
    """The garbage collector: dependents go, then (foreground) the owner."""
    time.sleep(api.cluster.step)
    for key in api.store.owned_by(uid):
        with contextlib.suppress(ApiError):
            api.store.delete(*key)
    if owner_last:
        with contextlib.suppress(ApiError):
            api.store.delete(resource, ns, name)
