"""One builder of task parameters, for tests that drive a backend or the lifecycle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ozw.tasks.params import TaskParams


def make_params(
    task_id: str = "t1",
    *,
    execution_id: str | None = "exec-1",
    env: Mapping[str, str] | None = None,
    image: str = "ubuntu:22.04",
    base_args: Sequence[str] = ("agent", "run"),
    **fields: Any,
) -> TaskParams:
    """Parameters of a task ``task_id`` (its own run); ``env`` adds to ``TASK_ID``;
    ``fields`` set any other :class:`~ozw.tasks.params.TaskParams` field."""
    values: dict[str, Any] = {
        "task_id": task_id,
        "run_id": task_id,
        "execution_id": execution_id,
        "env": {"TASK_ID": task_id, **(env or {})},
        "image": image,
        "sidecars": (),
        "base_args": tuple(base_args),
        "harness": None,
        "environment_id": None,
        "server_root_url": None,
        "task": {"id": task_id},
    }
    values.update(fields)
    return TaskParams(**values)
