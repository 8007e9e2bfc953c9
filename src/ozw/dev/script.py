"""The dev server's script: JSON lines of assignments and (timed) cancellations.

One line, one frame for the worker (blank lines and ``#`` comments skipped):

- an assignment's ``data`` object (``task_id``, ``task``, ``env_vars``, ...);
- ``{"cancel": "TASK-ID"}``, or the shorthand ``cancel TASK-ID``: a cancellation;
- a whole frame, ``{"type": ..., "data": ...}``, sent as it is.

Any JSON line may carry ``"after": "2s"`` (a duration, or seconds): it is sent that
long after the line before it. Every line is checked as the worker will check it, so
a line the worker would drop as malformed is an error here, naming the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Final

import attrs

from ozw.config.rules import duration
from ozw.strict import Invalid
from ozw.wire.codec import (
    ProtocolError,
    TaskAssignment,
    TaskCancellation,
    UnknownMessage,
    decode_server_message,
)

CANCEL_SHORTHAND: Final = "cancel "


class ScriptError(ValueError):
    """A script line that is not a frame the worker would accept (the message names it)."""


@attrs.frozen
class Step:
    """One frame to send, ``after`` seconds after the step before it."""

    frame: str
    after: float
    summary: str
    """What the frame is, for the server's log: ``task_assignment hello-1``."""


def parse_line(line: str) -> Step | None:
    """The step ``line`` describes, or None for a blank line or a comment.

    Raises:
        ScriptError: the line is not JSON, not an object, or not a valid frame.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith(CANCEL_SHORTHAND):
        obj: Any = {"cancel": text[len(CANCEL_SHORTHAND) :].strip()}
    else:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise ScriptError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ScriptError("expected a JSON object")
    after = _after(obj.pop("after", 0))
    if "cancel" in obj:
        if set(obj) != {"cancel"}:
            raise ScriptError(f"a cancel line has only 'cancel' and 'after', not {sorted(obj)}")
        obj = {"type": "task_cancellation", "data": {"task_id": obj["cancel"]}}
    elif "type" not in obj:
        obj = {"type": "task_assignment", "data": obj}
    frame = json.dumps(obj, separators=(",", ":"))
    return Step(frame, after, _summary(frame))


def _after(value: Any) -> float:
    try:
        return duration(value)
    except Invalid as exc:
        raise ScriptError(f"after: {exc}") from None


def _summary(frame: str) -> str:
    try:
        message = decode_server_message(frame)
    except ProtocolError as exc:
        raise ScriptError(str(exc)) from None
    match message:
        case TaskAssignment(task_id=task_id):
            return f"task_assignment {task_id}"
        case TaskCancellation(task_id=task_id):
            return f"task_cancellation {task_id}"
        case UnknownMessage(type=kind):
            return f"{kind} (a type the worker does not know)"
    raise AssertionError(message)  # pragma: no cover - decode returns only the above


def parse_script(lines: Iterable[str], where: str) -> Iterator[Step]:
    """Each step of ``lines``; an error names ``where`` and the line number."""
    for number, line in enumerate(lines, start=1):
        try:
            step = parse_line(line)
        except ScriptError as exc:
            raise ScriptError(f"{where}:{number}: {exc}") from None
        if step is not None:
            yield step
