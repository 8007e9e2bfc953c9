"""A fast path for structuring valid JSON into attrs classes, or giving up.

cattrs with strict hooks and detailed validation costs several times ``json.loads``
per frame. Almost every frame is valid, so this builds the same objects with exact
type checks written out per class (generated once, as cattrs generates its own
hooks), and at the first doubt (a wrong type, a missing field, a non-ASCII string)
raises :class:`GiveUp`; the caller then structures the strict way, which decides and
words the error. It accepts only what the strict converter accepts, and builds the
same objects from it (tests/test_protocol.py compares the two on generated input).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import attrs

Structure = Callable[[Any], Any]
KeyName = Callable[[type, str], str]


class GiveUp(Exception):
    """The fast path is not sure about a value: structure it the strict way."""


def _str(value: Any) -> str:
    # Only ASCII is decided here: it cannot hold a lone surrogate.
    if type(value) is str and value.isascii():
        return value
    raise GiveUp


def _float(value: Any) -> float:
    if type(value) is float and math.isfinite(value):
        return value
    raise GiveUp


def _exactly(tp: type) -> Structure:
    """A check for a type JSON gives exactly (bool is no int here, unlike in Python)."""

    def check(value: Any) -> Any:
        if type(value) is tp:
            return value
        raise GiveUp

    return check


def _any(value: Any) -> Any:
    return value


def _object(value: Any) -> dict[str, Any]:
    if type(value) is dict:
        return value
    raise GiveUp


def _str_map(value: Any) -> dict[str, str]:
    if type(value) is not dict:
        raise GiveUp
    # null means absent, as the strict converter has it.
    if None in value.values():
        value = {key: item for key, item in value.items() if item is not None}
    _ascii_strings(value)
    _ascii_strings(value.values())
    return dict(value)


def _str_list(value: Any) -> list[str]:
    if type(value) is not list:
        raise GiveUp
    _ascii_strings(value)
    return list(value)


def _ascii_strings(values: Iterable[Any]) -> None:
    """Give up unless every value is an ASCII string (one pass in C: ``join`` refuses
    anything else)."""
    try:
        joined = "".join(values)
    except TypeError:
        raise GiveUp from None
    if not joined.isascii():
        raise GiveUp


_SCALARS: dict[Any, Structure] = {
    str: _str,
    int: _exactly(int),
    float: _float,
    bool: _exactly(bool),
    Any: _any,
    dict[str, Any]: _object,
    dict[str, str]: _str_map,
    list[str]: _str_list,
}

_INLINE: dict[Any, str] = {
    str: "type(v) is not str or not v.isascii()",
    int: "type(v) is not int",
    bool: "type(v) is not bool",
}
"""Checks written into the generated code (a call per string would cost half the time)."""


class FastStructurer:
    """Structures ``dict`` → attrs instance for the classes it is asked about.

    ``key_name(cls, attribute)`` is the field's key on the wire; ``raw`` names, per
    class, an attribute that receives the object itself, as received.
    """

    def __init__(self, key_name: KeyName, raw: dict[type, str]) -> None:
        self._key_name = key_name
        self._raw = raw
        self._hooks: dict[type, Structure] = {}

    def structure(self, value: Any, cls: type) -> Any:
        """``value`` as a ``cls``; raises :class:`GiveUp` when unsure."""
        return self._hook(cls)(value)

    def prepare(self, cls: type) -> None:
        """Generate the code for ``cls`` now rather than at its first value."""
        self._hook(cls)

    def _hook(self, cls: type) -> Structure:
        hook = self._hooks.get(cls)
        if hook is None:
            hook = self._hooks[cls] = self._generate(cls)
        return hook

    def _structure_fn(self, tp: Any) -> Structure:
        if tp in _SCALARS:
            return _SCALARS[tp]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is list:
            item = self._structure_fn(args[0])

            def structure_list(value: Any) -> list[Any]:
                if type(value) is not list:
                    raise GiveUp
                return [item(element) for element in value]

            return structure_list
        if attrs.has(tp):
            return self._hook(tp)
        raise TypeError(f"no fast rule for {tp!r}")

    def _generate(self, cls: type) -> Structure:
        hints = typing.get_type_hints(cls)
        namespace: dict[str, Any] = {"cls": cls, "G": GiveUp}
        lines = ["def structure(o):", "    if type(o) is not dict: raise G", "    get = o.get"]
        arguments = []
        for index, field in enumerate(attrs.fields(cls)):
            if field.kw_only or not field.init:
                raise TypeError(f"{cls.__name__}.{field.name}: fields are passed by position")
            local = f"f{index}"
            arguments.append(local)
            if field.name == self._raw.get(cls):
                lines.append(f"    {local} = o")
                continue
            tp = _without_none(hints[field.name])
            lines.append(f"    v = get({self._key_name(cls, field.name)!r})")
            if field.default is attrs.NOTHING:
                lines.append("    if v is None: raise G")  # required: the converter says so
                absent = None
            elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                namespace[f"factory{index}"] = field.default.factory
                absent = f"factory{index}()"
            elif field.default is None:
                absent = "None"
            else:
                namespace[f"default{index}"] = field.default
                absent = f"default{index}"
            if tp is Any:
                present = [f"{local} = v"]
            elif tp in _INLINE:
                present = [f"if {_INLINE[tp]}: raise G", f"{local} = v"]
            else:
                namespace[f"structure{index}"] = self._structure_fn(tp)
                present = [f"{local} = structure{index}(v)"]
            if absent is None:
                lines += [f"    {line}" for line in present]
            else:
                lines += [f"    if v is None: {local} = {absent}", "    else:"]
                lines += [f"        {line}" for line in present]
        lines.append(f"    return cls({', '.join(arguments)})")
        # Generated from our own classes' fields, like cattrs' hooks: no outside text.
        exec("\n".join(lines), namespace)
        hook: Structure = namespace["structure"]
        return hook


def _without_none(tp: Any) -> Any:
    """``X`` for ``X | None``: the object level drops nulls before any field sees one."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp
