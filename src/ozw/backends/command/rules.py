"""The command backend's pure rules: the dispatch payload, the commands' environments,
the cause of a failed dispatch (see :mod:`ozw.backends.command` for the contract)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ozw.backends.execution.environment import (
    configured_environment,
    inherited_environment,
    layered_environment,
)
from ozw.config import EnvEntry
from ozw.tasks.params import TaskParams

if TYPE_CHECKING:
    from ozw.backends.execution import ScriptResult

PAYLOAD_VERSION: Final = 1
GO_ZERO_TIME: Final = "0001-01-01T00:00:00Z"
"""How the Go worker's payload writes a timestamp the server did not send."""
BACKEND_NAME: Final = "command"
MAX_CAUSE_LINE: Final = 300
"""The stderr line quoted in a failure message is cut to this many characters."""


def payload_task(task: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """The task as the Go worker's payload always carries it: ``id``, ``title``,
    ``task_definition.prompt``, ``created_at`` and ``updated_at`` present (a missing or
    null one as Go's zero value: ``""``, the zero time), every other received field
    kept as it came."""
    shaped = dict(task)
    defaults = {"id": run_id, "title": "", "created_at": GO_ZERO_TIME, "updated_at": GO_ZERO_TIME}
    for key, default in defaults.items():
        if shaped.get(key) is None:
            shaped[key] = default
    definition = shaped.get("task_definition")
    definition = dict(definition) if isinstance(definition, Mapping) else {}
    if definition.get("prompt") is None:
        definition["prompt"] = ""
    shaped["task_definition"] = definition
    return shaped


def dispatch_payload(params: TaskParams, *, worker_id: str) -> dict[str, Any]:
    """The version-1 dispatch payload of a task, keys in the documented order, shaped
    like the Go worker's (a dispatch script written for it runs unchanged)."""
    return {
        "version": PAYLOAD_VERSION,
        "run_id": params.run_id,
        "execution_id": params.execution_id or "",
        "server_root_url": params.server_root_url or "",
        "worker_id": worker_id,
        "docker_image": params.image,
        "base_args": list(params.base_args),
        "env": dict(params.env),
        "sidecars": [
            {"image": s.image, "mount_path": s.mount_path, "read_write": s.read_write}
            for s in params.sidecars
        ],
        "task": payload_task(params.task, params.run_id),
    }


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """The payload as written to stdin: compact ASCII JSON and a final newline."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def cancel_variables(params: TaskParams) -> dict[str, str]:
    """The variables ozw forces on ``cancel_command``."""
    return {
        "OZ_RUN_ID": params.run_id,
        "OZ_EXECUTION_ID": params.execution_id or "",
        "OZ_WORKER_BACKEND": BACKEND_NAME,
    }


def dispatch_variables(params: TaskParams) -> dict[str, str]:
    """The five variables ozw forces on ``dispatch_command``."""
    return {
        **cancel_variables(params),
        "OZ_SERVER_ROOT_URL": params.server_root_url or "",
        "OZ_DOCKER_IMAGE": params.image,
    }


def command_environment(
    *,
    worker: Mapping[str, str],
    configured: Iterable[EnvEntry],
    forced: Mapping[str, str],
) -> dict[str, str]:
    """A command's environment: the worker's (stripped), the configured entries, then
    ``forced`` last so nothing overrides it. See the module docstring."""
    return layered_environment(
        inherited=inherited_environment(worker),
        configured=configured_environment(configured, worker),
        forced=forced,
    )


def last_line(lines: Iterable[str]) -> str | None:
    """The last non-blank line, trimmed and cut to :data:`MAX_CAUSE_LINE` characters."""
    found = None
    for line in lines:
        if line.strip():
            found = line.strip()
    if found is not None and len(found) > MAX_CAUSE_LINE:
        found = found[: MAX_CAUSE_LINE - 3] + "..."
    return found


def dispatch_failure_cause(result: ScriptResult) -> str:
    """``dispatch command exited with exit code N[: <last stderr line>]``."""
    cause = result.describe()
    line = last_line(result.stderr_tail)
    return cause if line is None else f"{cause}: {line}"
