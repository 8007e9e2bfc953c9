"""The wire messages of PROTOCOL.md 2 and 3 and their JSON (de)serialisation.

Every frame is ``{"type": <string>, "data": <object>}``. Decoding is tolerant where
the server may evolve (unknown fields are ignored, optional fields may be absent)
and strict where a wrong value would do harm (a string where a number belongs is
refused, never coerced). Every decoding problem surfaces as :class:`ProtocolError`
with a one-line description; nothing else escapes.
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeAlias

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

JsonObject: TypeAlias = dict[str, Any]

TASK_ASSIGNMENT: Final = "task_assignment"
TASK_CANCELLATION: Final = "task_cancellation"
TASK_CLAIMED: Final = "task_claimed"
TASK_REJECTED: Final = "task_rejected"
TASK_COMPLETED: Final = "task_completed"
TASK_FAILED: Final = "task_failed"

REJECT_AT_CAPACITY: Final = "worker at maximum concurrency"
REJECT_SHUTTING_DOWN: Final = "worker shutting down"
TASK_STATE_CANCELLED: Final = "CANCELLED"


class ProtocolError(Exception):
    """A frame could not be decoded; the message says why, in one line."""


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

_SERVER_TYPES: Final[dict[str, type[Any]]] = {
    TASK_ASSIGNMENT: TaskAssignment,
    TASK_CANCELLATION: TaskCancellation,
}
_WORKER_TYPES: Final[dict[str, type[Any]]] = {
    TASK_CLAIMED: TaskClaimed,
    TASK_REJECTED: TaskRejected,
    TASK_COMPLETED: TaskCompleted,
    TASK_FAILED: TaskFailed,
}
_TYPE_NAMES: Final[dict[type[Any], str]] = {
    cls: name for name, cls in (_SERVER_TYPES | _WORKER_TYPES).items()
}


# --- the converter -------------------------------------------------------------


def _strict_str(value: Any, _: type[Any]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_json_kind(value)}")
    return value


def _strict_int(value: Any, _: type[Any]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError(f"expected an integer, got {_json_kind(value)}")
    return value


def _strict_float(value: Any, _: type[Any]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {_json_kind(value)}")
    return float(value)


def _strict_bool(value: Any, _: type[Any]) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_json_kind(value)}")
    return value


def _strict_object(value: Any, _: type[Any]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {_json_kind(value)}")
    return value


def _json_kind(value: Any) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
    return type(value).__name__


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(omit_if_default=False)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook_func(lambda cls: cls == dict[str, Any], _strict_object)

    def structure_str_map(value: Any, _: type[Any]) -> dict[str, str]:
        obj = _strict_object(value, dict)
        for key, item in obj.items():
            if not isinstance(item, str):
                raise TypeError(f"{key}: expected a string, got {_json_kind(item)}")
        return dict(obj)

    conv.register_structure_hook_func(lambda cls: cls == dict[str, str], structure_str_map)

    def structure_list(value: Any, cls: Any) -> list[Any]:
        if not isinstance(value, list):
            raise TypeError(f"expected an array, got {_json_kind(value)}")
        (item_type,) = cls.__args__
        return [conv.structure(item, item_type) for item in value]

    conv.register_structure_hook_func(
        lambda cls: getattr(cls, "__origin__", None) is list, structure_list
    )

    # Owner uses Go-style capitalised keys on the wire.
    conv.register_structure_hook(
        Owner,
        make_dict_structure_fn(
            Owner, conv, type=override(rename="Type"), id=override(rename="Id")
        ),
    )
    conv.register_unstructure_hook(
        Owner,
        make_dict_unstructure_fn(
            Owner, conv, type=override(rename="Type"), id=override(rename="Id")
        ),
    )
    task_structure = make_dict_structure_fn(Task, conv, raw=override(omit=True))

    def structure_task(value: Any, _: type[Any]) -> Task:
        obj = _strict_object(value, dict)
        # Absent optional fields are fine; null is treated as absent.
        task = task_structure({k: v for k, v in obj.items() if v is not None}, Task)
        return attrs.evolve(task, raw=obj)

    conv.register_structure_hook(Task, structure_task)
    conv.register_unstructure_hook(Task, lambda task: task.raw or _unstructure_task(conv, task))
    return conv


def _unstructure_task(conv: cattrs.Converter, task: Task) -> JsonObject:
    out: JsonObject = {}
    for field in attrs.fields(Task):
        if field.name == "raw":
            continue
        value = getattr(task, field.name)
        if value is not None:
            out[field.name] = conv.unstructure(value)
    return _drop_none(out)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


_converter: Final = _make_converter()


def _drop_nulls_shallow(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None}


def _structure(data: Any, cls: type[Any]) -> Any:
    return _converter.structure(_nulls_as_absent(data), cls)


def _nulls_as_absent(value: Any) -> Any:
    """JSON null for an optional field means the same as the field being absent."""
    if isinstance(value, dict):
        return {k: _nulls_as_absent(v) for k, v in value.items() if v is not None}
    return value


def _describe_structure_error(exc: Exception, what: str) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        problems = cattrs.transform_error(exc, path=what)
        return "; ".join(problems)
    return f"{what}: {exc}"


# --- public API ----------------------------------------------------------------


def _parse_frame(text: str | bytes) -> tuple[str, dict[str, Any]]:
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise ProtocolError(f"frame is {_json_kind(frame)}, not an object")
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("frame has no string 'type'")
    data = frame.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(f"{kind}: 'data' is {_json_kind(data)}, not an object")
    return kind, data


def _decode(kind: str, data: dict[str, Any], cls: type[Any]) -> Any:
    try:
        return _structure(data, cls)
    except RecursionError:
        raise ProtocolError(f"{kind}: nested too deeply") from None
    except Exception as exc:  # cattrs raises several kinds; all mean "cannot decode"
        raise ProtocolError(_describe_structure_error(exc, kind)) from None


def decode_server_message(text: str | bytes) -> ServerMessage:
    """Decode one frame from the dispatch server.

    Raises:
        ProtocolError: the frame is not JSON, not an object, or a known message
            type whose data cannot be decoded (e.g. no ``task_id`` or ``task``).
    """
    kind, data = _parse_frame(text)
    cls = _SERVER_TYPES.get(kind)
    if cls is None:
        return UnknownMessage(kind)
    message: ServerMessage = _decode(kind, data, cls)
    if isinstance(message, TaskAssignment) and not message.task_id:
        raise ProtocolError(f"{kind}: task_id is empty")
    return message


def decode_worker_message(text: str | bytes) -> WorkerMessage:
    """Decode one frame sent by a worker (used by the local dispatch server)."""
    kind, data = _parse_frame(text)
    cls = _WORKER_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown worker message type {kind!r}")
    message: WorkerMessage = _decode(kind, data, cls)
    return message


def unstructure(message: WorkerMessage | TaskAssignment | TaskCancellation) -> JsonObject:
    """The ``data`` object of a message, with absent optional fields omitted."""
    if isinstance(message, TaskAssignment):
        data = _converter.unstructure(message)
        data["task"] = _converter.unstructure(message.task)
        return {k: v for k, v in _drop_none(data).items() if v not in ({}, [])} | {
            "task_id": message.task_id,
            "task": data["task"],
        }
    data = _converter.unstructure(message)
    return _drop_nulls_shallow(data)


def encode_message(message: WorkerMessage | TaskAssignment | TaskCancellation) -> str:
    """Encode a message as one compact JSON text frame."""
    return json.dumps(
        {"type": _TYPE_NAMES[type(message)], "data": unstructure(message)},
        separators=(",", ":"),
    )


def is_terminal(message: WorkerMessage) -> bool:
    """Whether a worker message is a task's terminal report."""
    return isinstance(message, TaskCompleted | TaskFailed)
