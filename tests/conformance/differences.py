"""Where ozw differs from the Go worker on purpose: each entry of docs/conformance.md's
differences table, as the edit it makes to a Go transcript.

The replay test turns the Go fixture into the transcript ozw must produce by applying
exactly the differences its scenario names, then compares for equality. An entry that
changes nothing in a scenario naming it is an error too: the list stays exact.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any, Final

Transcript = dict[str, Any]

HOOKS: Final = ("setup-", "teardown-", "dispatch-", "cancel-")


def _hooks(transcript: Transcript, *prefixes: str) -> Iterator[dict[str, Any]]:
    for name, record in transcript["records"].items():
        if name.startswith(prefixes or HOOKS):
            yield record


def workspace_root_marker(t: Transcript) -> None:
    t["leftovers"] = sorted([*t["leftovers"], ".ozw-workspaces"])


def api_key_withheld(t: Transcript) -> None:
    for record in _hooks(t):
        record["env"]["names"].remove("WARP_API_KEY")


def duplicate_runs_once(t: Transcript) -> None:
    for task_id, frames in t["frames"].items():
        results = [f for f in frames if f["type"] in ("task_completed", "task_failed")]
        for extra in results[1:]:
            frames.remove(extra)
        runs = f"runs-{task_id}"
        if runs in t["records"] and len(results) > 1:
            t["records"][runs] -= len(results) - 1


def follow_ups_serialised(t: Transcript) -> None:
    """Go ran both executions at once in one workspace; the second removed it when it
    ended and the first one's later git call failed. ozw runs them one after the other."""
    for task_id, frames in t["frames"].items():
        for i, frame in enumerate(frames):
            if frame["type"] == "task_failed" and i > 0:
                frames[i] = {
                    "type": "task_completed",
                    "data": {"task_id": task_id, "message": "Task completed successfully"},
                }


def teardown_failure_counted(t: Transcript) -> None:
    t["metrics"]['oz_worker_task_failures_total{phase="cleanup",reason="cleanup"}'] += 1


def shutdown_message(t: Transcript) -> None:
    for frames in t["frames"].values():
        for frame in frames:
            if frame["data"].get("failure_reason") == "graceful_shutdown":
                frame["data"]["message"] = "Failed to execute task: ..."


def task_timeout(t: Transcript) -> None:
    for frames in t["frames"].values():
        for i, frame in enumerate(frames):
            if frame["type"] == "task_completed":
                frames[i] = {
                    "type": "task_failed",
                    "data": {
                        "task_id": frame["data"]["task_id"],
                        "message": "Failed to execute task: ...",
                        "failure_reason": "task_timeout",
                    },
                }


def payload_sidecars_list(t: Transcript) -> None:
    for record in _hooks(t, "dispatch-"):
        if record["payload"].get("sidecars") is None:
            record["payload"]["sidecars"] = []


def container_labels(t: Transcript) -> None:
    for container in t["containers"].values():
        container["labels"] = sorted(
            [*container["labels"], "ozw.image", "ozw.role", "ozw.task_id", "ozw.worker_id"]
        )


def no_leaked_sidecar_containers(t: Transcript) -> None:
    t["leftovers"]["containers"] = 0


DIFFERENCES: Final[dict[str, Callable[[Transcript], None]]] = {
    "workspace-root-marker": workspace_root_marker,
    "api-key-withheld-from-scripts": api_key_withheld,
    "duplicate-runs-once": duplicate_runs_once,
    "follow-ups-serialised": follow_ups_serialised,
    "teardown-failure-counted": teardown_failure_counted,
    "shutdown-message": shutdown_message,
    "task-timeout": task_timeout,
    "payload-sidecars-list": payload_sidecars_list,
    "container-labels": container_labels,
    "no-leaked-sidecar-containers": no_leaked_sidecar_containers,
}


class StaleDifference(AssertionError):
    """A scenario names a difference that does not change its transcript."""


def expected(go: Transcript, names: tuple[str, ...]) -> Transcript:
    """What ozw must produce: the Go transcript with the named differences applied."""
    out = copy.deepcopy(go)
    for name in names:
        before = copy.deepcopy(out)
        DIFFERENCES[name](out)
        if out == before:
            raise StaleDifference(f"difference {name!r} changes nothing here: remove it")
    return out
