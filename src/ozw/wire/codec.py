"""The protocol's JSON (de)serialisation; the messages themselves are :mod:`ozw.wire.messages`.

Every frame is ``{"type": <string>, "data": <object>}``. Decoding is tolerant where
the server may evolve (unknown fields are ignored, optional fields may be absent)
and strict where a wrong value would do harm (a string where a number belongs is
refused, never coerced). Every decoding problem surfaces as :class:`ProtocolError`
with a one-line description; nothing else escapes. The message classes are
re-exported here, so importers name one module for the whole protocol.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ozw.strict import (
    REQUIRED,
    Invalid,
    Vocabulary,
    describe,
    error_leaves,
    item_error,
    register_strict_scalars,
    structure_items,
)

# Every message class is re-exported, so importers name one module for the protocol.
from ozw.wire import messages
from ozw.wire.messages import *  # noqa: F403
from ozw.wire.messages import (
    MESSAGE_TYPE_NAMES,
    SERVER_MESSAGE_TYPES,
    WORKER_MESSAGE_TYPES,
    JsonObject,
    Owner,
    ServerMessage,
    Task,
    TaskAssignment,
    TaskCancellation,
    TaskCompleted,
    TaskFailed,
    UnknownMessage,
    WorkerMessage,
)

__all__ = [
    *messages.__all__,
    "ProtocolError",
    "decode_server_message",
    "decode_worker_message",
    "encode_message",
    "is_terminal",
    "message_type",
    "unstructure",
    "unstructure_task",
]


class ProtocolError(Exception):
    """A frame could not be decoded; the message says why, in one line.

    The text quotes values from the frame, so control characters are escaped on
    construction: whatever the server sent, the message stays one log line.
    """

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


# --- the converter -------------------------------------------------------------
#
# The strict hooks and the error walk are ozw.strict's (shared with the config);
# what is JSON's own is here: the kind names, free-form objects, null-as-absent,
# Owner's Go-style capitalised keys.


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


_JSON: Final = Vocabulary(
    kind_of=_json_kind,
    expected={str: "a string", int: "an integer", float: "a number", bool: "true or false"},
    integral_floats=True,
)


def _strict_object(value: Any, _: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"expected an object, got {_json_kind(value)}")
    return value


def _structure_str_map(value: Any, cls: Any) -> dict[str, str]:
    obj = _strict_object(value, cls)
    out: dict[str, str] = {}
    errors: list[Exception] = []
    for key, item in obj.items():
        if item is None:
            continue  # null means absent, as everywhere else
        try:
            # A lone surrogate in a name is as unusable as in a value.
            out[_converter.structure(key, str)] = _converter.structure(item, str)
        except Invalid as exc:
            errors.append(item_error(exc, key, str))
    if errors:
        raise cattrs.IterableValidationError("invalid entries", errors, cls)
    return out


_OWNER_KEYS: Final = {"type": "Type", "id": "Id"}


def _wire_name(cls: Any, name: str) -> str:
    return _OWNER_KEYS.get(name, name) if cls is Owner else name


def _attrs_hook_factory(cls: Any, conv: cattrs.Converter) -> Any:
    """Structure hook for every wire class: object check, null-as-absent, renames."""
    overrides: dict[str, Any] = {}
    if cls is Owner:
        overrides = {name: override(rename=key) for name, key in _OWNER_KEYS.items()}
    if cls is Task:
        overrides = {"raw": override(omit=True)}
    generated = make_dict_structure_fn(cls, conv, **overrides)

    def structure(value: Any, _: Any) -> Any:
        obj = _strict_object(value, cls)
        # null for a field means the same as the field being absent. Only this
        # level is filtered: free-form JSON inside (mcp_servers, task_definition)
        # and Task.raw keep their nulls.
        result = generated({k: v for k, v in obj.items() if v is not None}, cls)
        if cls is Task:
            result = attrs.evolve(result, raw=obj)
        return result

    return structure


def _attrs_unstructure_factory(cls: Any, conv: cattrs.Converter) -> Any:
    # Optional fields left absent (None, empty list/object) are omitted, as on the
    # wire; a plain default such as ``read_write: false`` is a value and stays.
    overrides: dict[str, Any] = {
        field.name: override(omit_if_default=False)
        for field in attrs.fields(cls)
        if field.default is not attrs.NOTHING
        and field.default is not None
        and not isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
    }
    if cls is Owner:
        overrides = {name: override(rename=key) for name, key in _OWNER_KEYS.items()}
    if cls is Task:
        overrides["raw"] = override(omit=True)
    generated = make_dict_unstructure_fn(cls, conv, _cattrs_omit_if_default=True, **overrides)
    if cls is Task:
        return lambda task: task.raw or generated(task)
    return generated


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    register_strict_scalars(conv, _JSON)
    # Free-form JSON objects pass through untouched (nulls included).
    conv.register_structure_hook_func(lambda cls: cls == dict[str, Any], _strict_object)
    conv.register_structure_hook_func(lambda cls: cls == dict[str, str], _structure_str_map)

    def structure_list(value: Any, cls: Any) -> list[Any]:
        if not isinstance(value, list):
            raise Invalid(f"expected an array, got {_json_kind(value)}")
        (item_type,) = cls.__args__
        return structure_items(conv, value, item_type)

    conv.register_structure_hook_func(
        lambda cls: getattr(cls, "__origin__", None) is list, structure_list
    )
    conv.register_structure_hook_factory(attrs.has, lambda cls: _attrs_hook_factory(cls, conv))
    conv.register_unstructure_hook_factory(
        attrs.has, lambda cls: _attrs_unstructure_factory(cls, conv)
    )
    return conv


_converter: Final = _make_converter()

_MAX_PROBLEMS: Final = 5
"""Problems listed in one error message; a hostile frame must not make a huge log line."""


def _describe_structure_error(exc: BaseException, what: str) -> str:
    problems = [
        f"{path}: {'required field missing' if (text := describe(leaf)) == REQUIRED else text}"
        for path, leaf in error_leaves(exc, what, _wire_name)
    ]
    text = "; ".join(problems[:_MAX_PROBLEMS])
    if len(problems) > _MAX_PROBLEMS:
        text += f"; and {len(problems) - _MAX_PROBLEMS} more"
    return text


def _one_line(text: str) -> str:
    """Escape every non-printable character so a message can never span lines."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # e.g. 1e999: not a usable number
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # past sys.get_int_max_str_digits(); the stock text is a lecture
        raise ValueError(f"number out of range: {len(text)} digits") from None


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and nothing good comes
    # from a NaN CPU limit.
    raise ValueError(f"{name} is not valid JSON")


def _label(kind: str) -> str:
    """The message type as it may appear at the start of an error message."""
    return kind if kind.isidentifier() else json.dumps(kind)


# --- public API ----------------------------------------------------------------


def _parse_frame(text: str | bytes) -> tuple[str, dict[str, Any]]:
    try:
        frame = json.loads(
            text, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_refuse_constant
        )
    except UnicodeDecodeError:  # a ValueError too, but its text is about codecs
        raise ProtocolError("malformed JSON: not valid UTF-8") from None
    except RecursionError:
        raise ProtocolError("malformed JSON: nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise ProtocolError(f"frame is {_json_kind(frame)}, not an object")
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(f"frame 'type' is {_json_kind(kind)}, not a string")
    # An absent or null "data" is an empty object: the message's own required
    # fields then say what is missing.
    data = frame.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(f"{_label(kind)}.data: expected an object, got {_json_kind(data)}")
    return kind, data


def _decode(kind: str, data: dict[str, Any], cls: type[Any]) -> Any:
    try:
        return _converter.structure(data, cls)
    except RecursionError:
        raise ProtocolError(f"{kind}: nested too deeply") from None
    except Exception as exc:  # cattrs raises several kinds; all mean "cannot decode"
        raise ProtocolError(_describe_structure_error(exc, kind)) from None


def decode_server_message(text: str | bytes) -> ServerMessage:
    """Decode one frame from the dispatch server.

    Unknown fields are ignored and absent optional ones take their defaults (the
    server adds fields over time); a message type this worker does not know is an
    :class:`UnknownMessage`, for the caller to log and skip.

    Raises:
        ProtocolError: the frame is not JSON, not an object, or a known message
            type whose data cannot be decoded (e.g. no ``task_id`` or ``task``).
            Nothing else escapes, whatever the input.
    """
    kind, data = _parse_frame(text)
    cls = SERVER_MESSAGE_TYPES.get(kind)
    if cls is None:
        return UnknownMessage(kind)
    message: ServerMessage = _decode(kind, data, cls)
    if isinstance(message, TaskAssignment) and not message.task_id:
        # Results are reported by task_id: an assignment without one cannot be run.
        raise ProtocolError(f"{kind}.task_id: must not be empty")
    return message


def decode_worker_message(text: str | bytes) -> WorkerMessage:
    """Decode one frame sent by a worker (used by the local dispatch server and tests).

    Raises:
        ProtocolError: as :func:`decode_server_message`, and for an unknown type.
    """
    kind, data = _parse_frame(text)
    cls = WORKER_MESSAGE_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown worker message type {json.dumps(kind)}")
    message: WorkerMessage = _decode(kind, data, cls)
    return message


def unstructure_task(task: Task) -> JsonObject:
    """The task as a JSON object: exactly as received when it was decoded."""
    result: JsonObject = _converter.unstructure(task, Task)
    return result


def unstructure(message: WorkerMessage | TaskAssignment | TaskCancellation) -> JsonObject:
    """The ``data`` object of a message, with absent optional fields omitted."""
    result: JsonObject = _converter.unstructure(message, type(message))
    return result


def encode_message(message: WorkerMessage | TaskAssignment | TaskCancellation) -> str:
    """Encode a message as one compact JSON text frame."""
    kind = MESSAGE_TYPE_NAMES[type(message)]
    return json.dumps({"type": kind, "data": unstructure(message)}, separators=(",", ":"))


def prepare() -> None:
    """Generate now the code that decodes and encodes every message type: cattrs
    writes it at a type's first use, tens of ms that would otherwise delay the claim
    of the first assignment."""
    for cls in (*MESSAGE_TYPE_NAMES, Task):
        _converter.get_structure_hook(cls)
        _converter.get_unstructure_hook(cls)


def is_terminal(message: WorkerMessage) -> bool:
    """Whether a worker message is a task's terminal report."""
    return isinstance(message, TaskCompleted | TaskFailed)


def message_type(message: ServerMessage | WorkerMessage) -> str:
    """The wire ``type`` of a message (``task_assignment``, ``task_claimed``, ...)."""
    if isinstance(message, UnknownMessage):
        return message.type
    return MESSAGE_TYPE_NAMES[type(message)]
