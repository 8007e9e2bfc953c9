"""The wire messages of the protocol: what each frame's data holds.

Plain frozen attrs classes, one per message type, and the type names that tag
them on the wire. Their JSON (de)serialisation is :mod:`ozw.wire.codec`'s.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import attrs

__all__ = [
    "MESSAGE_TYPE_NAMES",
    "REJECT_AT_CAPACITY",
    "REJECT_SHUTTING_DOWN",
    "SERVER_MESSAGE_TYPES",
    "TASK_ASSIGNMENT",
    "TASK_CANCELLATION",
    "TASK_CLAIMED",
    "TASK_COMPLETED",
    "TASK_FAILED",
    "TASK_REJECTED",
    "TASK_STATE_CANCELLED",
    "WORKER_MESSAGE_TYPES",
    "AgentConfigSnapshot",
    "AwsInference",
    "Harness",
    "InferenceProviders",
    "InstanceShape",
    "JsonObject",
    "Owner",
    "ServerMessage",
    "SessionSharing",
    "SidecarSpec",
    "Task",
    "TaskAssignment",
    "TaskCancellation",
    "TaskClaimed",
    "TaskCompleted",
    "TaskFailed",
    "TaskRejected",
    "TerminalMessage",
    "UnknownMessage",
    "WorkerMessage",
]

JsonObject: TypeAlias = dict[str, Any]

TASK_ASSIGNMENT: Final = "task_assignment"
TASK_CANCELLATION: Final = "task_cancellation"
TASK_CLAIMED: Final = "task_claimed"
TASK_REJECTED: Final = "task_rejected"
TASK_COMPLETED: Final = "task_completed"
TASK_FAILED: Final = "task_failed"

REJECT_AT_CAPACITY: Final = "worker at maximum concurrency"
REJECT_SHUTTING_DOWN: Final = "worker shutting down"
REJECT_LABELS: Final = {REJECT_AT_CAPACITY: "at_capacity", REJECT_SHUTTING_DOWN: "shutting_down"}
"""Each rejection's bounded name, for metrics and spans (Go's ``at_capacity``)."""
TASK_STATE_CANCELLED: Final = "CANCELLED"


# --- server → worker ---------------------------------------------------------


@attrs.frozen
class Owner:
    type: str | None = None
    id: Any = None


@attrs.frozen
class Harness:
    type: str | None = None


@attrs.frozen
class AwsInference:
    disabled: bool = False
    role_arn: str | None = None
    region: str | None = None


@attrs.frozen
class InferenceProviders:
    aws: AwsInference | None = None


@attrs.frozen
class SessionSharing:
    public_access: str | None = None


@attrs.frozen
class AgentConfigSnapshot:
    """The agent configuration the server snapshotted for a task (all optional)."""

    environment_id: str | None = None
    base_prompt: str | None = None
    model_id: str | None = None
    profile_id: str | None = None
    skill_spec: str | None = None
    mcp_servers: dict[str, Any] | None = None
    computer_use_enabled: bool | None = None
    idle_timeout_minutes: int | None = None
    harness: Harness | None = None
    harness_auth_secrets: Any = None
    inference_providers: InferenceProviders | None = None
    session_sharing: SessionSharing | None = None
    snapshot_disabled: bool | None = None
    snapshot_upload_timeout_secs: int | None = None
    snapshot_script_timeout_secs: int | None = None


@attrs.frozen
class Task:
    """The task record. ``raw`` keeps the object exactly as received, for pass-through."""

    id: str
    title: str | None = None
    task_definition: dict[str, Any] | None = None
    created_at: str | None = None
    updated_at: str | None = None
    owner: Owner | None = None
    agent_config_snapshot: AgentConfigSnapshot | None = None
    agent_conversation_id: str | None = None
    raw: JsonObject = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen
class SidecarSpec:
    image: str
    mount_path: str
    read_write: bool = False


@attrs.frozen
class InstanceShape:
    vcpus: float | None = None
    memory_gb: float | None = None


@attrs.frozen
class TaskAssignment:
    task_id: str
    task: Task
    execution_id: str | None = None
    docker_image: str | None = None
    sidecar_image: str | None = None
    env_vars: dict[str, str] = attrs.field(factory=dict)
    additional_sidecars: list[SidecarSpec] = attrs.field(factory=list)
    additional_oz_args: list[str] = attrs.field(factory=list)
    instance_shape: InstanceShape | None = None


@attrs.frozen
class TaskCancellation:
    task_id: str


@attrs.frozen
class UnknownMessage:
    """A well-formed frame of a type this worker does not know (logged and skipped)."""

    type: str


ServerMessage: TypeAlias = TaskAssignment | TaskCancellation | UnknownMessage


# --- worker → server ---------------------------------------------------------


@attrs.frozen
class TaskClaimed:
    task_id: str
    worker_id: str


@attrs.frozen
class TaskRejected:
    task_id: str
    reason: str


@attrs.frozen
class TaskCompleted:
    task_id: str
    message: str
    task_state: str | None = None


@attrs.frozen
class TaskFailed:
    task_id: str
    message: str
    failure_reason: str
    exit_code: int | None = None


WorkerMessage: TypeAlias = TaskClaimed | TaskRejected | TaskCompleted | TaskFailed
TerminalMessage: TypeAlias = TaskCompleted | TaskFailed

SERVER_MESSAGE_TYPES: Final[dict[str, type[Any]]] = {  # the server sends these
    TASK_ASSIGNMENT: TaskAssignment,
    TASK_CANCELLATION: TaskCancellation,
}
WORKER_MESSAGE_TYPES: Final[dict[str, type[Any]]] = {  # the worker sends these
    TASK_CLAIMED: TaskClaimed,
    TASK_REJECTED: TaskRejected,
    TASK_COMPLETED: TaskCompleted,
    TASK_FAILED: TaskFailed,
}
MESSAGE_TYPE_NAMES: Final[dict[type[Any], str]] = {
    cls: name for name, cls in (SERVER_MESSAGE_TYPES | WORKER_MESSAGE_TYPES).items()
}
