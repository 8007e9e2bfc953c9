"""Strict cattrs pieces shared by the wire protocol (JSON) and the configuration (TOML).

Stock cattrs coerces (``"1"`` becomes 1, a string is iterated into characters) and
words its errors for programmers. These hooks refuse instead, in words for an
operator, and :func:`error_leaves` turns cattrs' exception tree into
``(path, problem)`` pairs so either side can write its one-line messages.

``cattrs.transform_error`` walks the same tree, but it names a field by its attribute
rather than its key on the wire (``Owner.type`` is ``"Type"``), quotes mapping keys
with ``repr`` and reports unknown keys at the enclosing table: hence this walker.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)


class Invalid(ValueError):
    """A value broke a rule; the message is the problem in words, without its path."""


@attrs.frozen
class Vocabulary:
    """How a document format names its value kinds in error messages."""

    kind_of: Callable[[object], str]
    """``"a string"``, ``"an array"``, ... for any value."""
    expected: dict[type, str]
    """What each scalar type is called when it is the one expected."""
    integral_floats: bool
    """Whether ``5.0`` is an integer (JSON encoders write whole numbers so)."""


def register_strict_scalars(converter: cattrs.Converter, words: Vocabulary) -> None:
    """Hooks for ``str``, ``int``, ``float`` and ``bool`` that never coerce."""

    def refuse(value: object, cls: type) -> Invalid:
        return Invalid(f"expected {words.expected[cls]}, got {words.kind_of(value)}")

    def structure_str(value: object, _: Any) -> str:
        if not isinstance(value, str):
            raise refuse(value, str)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate cannot become an argv entry, a variable or a log line.
            raise Invalid(
                f"expected {words.expected[str]}, got invalid Unicode (a lone surrogate)"
            ) from None
        return value

    def structure_int(value: object, _: Any) -> int:
        # bool is an int in Python; neither JSON nor TOML calls true a number.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if words.integral_floats and isinstance(value, float):
            if value.is_integer():
                return int(value)
            raise Invalid(f"expected {words.expected[int]}, got a fractional number")
        raise refuse(value, int)

    def structure_float(value: object, _: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise refuse(value, float)
        try:
            result = float(value)
        except OverflowError:  # an integer with hundreds of digits
            raise Invalid("number out of range") from None
        if not math.isfinite(result):
            raise Invalid(f"must be a finite number, got {value}")
        return result

    def structure_bool(value: object, _: Any) -> bool:
        if not isinstance(value, bool):
            raise refuse(value, bool)
        return value

    converter.register_structure_hook(str, structure_str)
    converter.register_structure_hook(int, structure_int)
    converter.register_structure_hook(float, structure_float)
    converter.register_structure_hook(bool, structure_bool)


def item_error(exc: Exception, index: int | str, item_type: Any) -> Exception:
    """Tag ``exc`` with the index or key it happened at, as cattrs tags its own."""
    exc.add_note(IterableValidationNote(f"@ {index!r}", index, item_type))
    return exc


def structure_items(converter: cattrs.Converter, items: list[Any], item_type: Any) -> list[Any]:
    """Each of ``items`` structured as ``item_type``; every bad one reported with its index."""
    out: list[Any] = []
    errors: list[Exception] = []
    for index, item in enumerate(items):
        try:
            out.append(converter.structure(item, item_type))
        except Exception as exc:  # collected and reported with its index
            errors.append(item_error(exc, index, item_type))
    if errors:
        raise IterableValidationError("invalid items", errors, list[item_type])
    return out


KeyName = Callable[[type, str], str]


def _attribute_name(_cls: type, name: str) -> str:
    return name


def error_leaves(
    exc: BaseException, path: str, key_name: KeyName = _attribute_name
) -> Iterator[tuple[str, BaseException]]:
    """``(path, leaf exception)`` for each leaf of a cattrs error tree, in document order.

    Paths read ``a.b[0].c`` and ``map["key"]`` (keys JSON-quoted so a path stays one
    line); an unknown key is reported at its own path. ``key_name(cls, attribute)``
    gives a field's key in the document when it is renamed.
    """
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            yield from error_leaves(sub, join(path, key_name(exc.cl, note.name)), key_name)
        for sub in without:
            yield from error_leaves(sub, path, key_name)
    elif isinstance(exc, IterableValidationError):
        with_index, others = exc.group_exceptions()
        for sub, index_note in with_index:
            index = index_note.index
            label = str(index) if isinstance(index, int) else json.dumps(index)
            yield from error_leaves(sub, f"{path}[{label}]", key_name)
        for sub in others:
            yield from error_leaves(sub, path, key_name)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield join(path, key), exc
    else:
        yield path, exc


def join(path: str, key: str) -> str:
    """``path.key``, or ``key`` at the top."""
    return f"{path}.{key}" if path else key


REQUIRED: Final = "required"


def describe(exc: BaseException) -> str:
    """The problem a leaf exception stands for, in words."""
    if isinstance(exc, ForbiddenExtraKeysError):
        return "unknown key"
    if isinstance(exc, KeyError):
        return REQUIRED
    if isinstance(exc, Invalid):
        return str(exc)
    return f"invalid value ({type(exc).__name__}: {exc})"
