"""Values of an assignment in range: what makes absurd task input bad input.

The wire decoder checks types; these pure rules check that each number and path
means something an engine can do (docs/protocol.md, "Task parameters"). A value out
of range fails the task with a named field and reason, never an internal error.
"""

from __future__ import annotations

import math
import posixpath
from typing import Final

from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.wire.codec import TaskAssignment

MAX_VCPUS: Final = (2**63 - 1) // 10**9
"""Most CPUs a limit can name: Docker counts billionths of a CPU in an int64."""
MAX_MEMORY_GB: Final = (2**63 - 1) >> 30
"""Most GiB a limit can name: Docker and Kubernetes count bytes in an int64."""
MAX_DURATION_SECONDS: Final = (2**63 - 1) // 10**9
"""Longest duration the agent CLI can parse (Go's ``time.Duration``, int64 nanoseconds)."""


def normalise_mount_path(path: str) -> str:
    """An absolute mount path as the engine sees it (``/a//b/./`` is ``/a/b``).

    Anything else (relative, climbing with ``..``) is returned unchanged, for
    :func:`mount_path_problem` to refuse as it was written.
    """
    if not path.startswith("/") or ".." in path.split("/"):
        return path
    # normpath keeps a leading "//" (POSIX leaves its meaning open); the engine does not.
    return "/" + posixpath.normpath(path).lstrip("/")


def mount_path_problem(path: str) -> str | None:
    """Why a sidecar mount path is refused, or None.

    A path that climbs (``/x/../../etc``) is refused like a relative one (``../etc``):
    whatever it names, it does not say so plainly.
    """
    if not path.strip():
        return "is empty"
    if not path.startswith("/"):
        return "is not absolute"
    if ".." in path.split("/"):
        return "climbs with '..'"
    if normalise_mount_path(path) == "/":
        return "is the root directory"
    if ":" in path or "," in path or "\0" in path:
        # ':' would split a --volume spec; keep the path unambiguous for every engine.
        return "holds ':' ',' or NUL"
    return None


def size_problem(value: float | None, limit: int) -> str | None:
    """Why a size (vCPUs, GiB) is refused, or None. Absent and 0 mean "no limit".

    Finite and at most ``limit`` (what the engine can express); negative sizes are
    refused rather than ignored, since they can only be a mistake.
    """
    if value is None or value == 0:
        return None
    if not math.isfinite(value) or value < 0 or value > limit:
        return f"{value!r} is not a number from 0 to {limit}"
    return None


def count_problem(value: int | None, limit: int) -> str | None:
    """Why a whole count (minutes, seconds) is refused, or None. Absent and 0 mean unset."""
    if value is None or value == 0:
        return None
    if value < 0 or value > limit:
        return f"{value} is not a whole number from 0 to {limit}"
    return None


def assignment_problems(
    assignment: TaskAssignment, shape_failure: FailureReason
) -> list[tuple[FailureReason, str]]:
    """Every value of ``assignment`` out of range, as (reason, what is wrong), in field order.

    ``shape_failure`` is the backend's reason for resources it cannot set
    (``container_create``, ``job_create``).
    """
    problems: list[tuple[FailureReason, str]] = []
    if (shape := assignment.instance_shape) is not None:
        for name, value, limit in (
            ("vcpus", shape.vcpus, MAX_VCPUS),
            ("memory_gb", shape.memory_gb, MAX_MEMORY_GB),
        ):
            if (problem := size_problem(value, limit)) is not None:
                problems.append((shape_failure, f"instance_shape.{name}: {problem}"))
    for index, sidecar in enumerate(assignment.additional_sidecars):
        if (problem := mount_path_problem(sidecar.mount_path)) is not None:
            problems.append(
                (
                    FailureReason.SIDECAR_PREP,
                    f"additional_sidecars[{index}].mount_path {sidecar.mount_path!r} {problem}",
                )
            )
    snapshot = assignment.task.agent_config_snapshot
    if snapshot is not None:
        for name, value, limit in (
            ("idle_timeout_minutes", snapshot.idle_timeout_minutes, MAX_DURATION_SECONDS // 60),
            (
                "snapshot_upload_timeout_secs",
                snapshot.snapshot_upload_timeout_secs,
                MAX_DURATION_SECONDS,
            ),
            (
                "snapshot_script_timeout_secs",
                snapshot.snapshot_script_timeout_secs,
                MAX_DURATION_SECONDS,
            ),
        ):
            if (problem := count_problem(value, limit)) is not None:
                problems.append(
                    (FailureReason.AGENT_INVOCATION, f"agent_config_snapshot.{name}: {problem}")
                )
    return problems


def assignment_refusal(
    assignment: TaskAssignment, shape_failure: FailureReason
) -> TaskFailure | None:
    """The failure of an assignment with values out of range: the first problem's reason,
    every problem in the cause."""
    problems = assignment_problems(assignment, shape_failure)
    if not problems:
        return None
    causes = "; ".join(cause for _, cause in problems)
    return TaskFailure(problems[0][0], f"the assignment is not valid: {causes}")
