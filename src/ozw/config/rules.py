"""The rules a configuration value must follow, as small pure functions.

Each check takes a raw TOML value and returns the model's value, or raises
:class:`~ozw.strict.Invalid` with the problem in words; the loader adds where the
value came from. The model attaches them to its fields with :func:`rule`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from ozw.config.durations import BARE_NUMBER_RE, DURATION_HINT, format_duration, parse_duration
from ozw.strict import Invalid, Vocabulary

RULE: Final = "ozw.config.rule"

_TOML_TYPES: Final[dict[type, str]] = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    list: "an array",
    dict: "a table",
}


def toml_kind(value: object) -> str:
    """What TOML calls the kind of ``value``: ``"a string"``, ``"a table"``, ..."""
    for cls, name in _TOML_TYPES.items():
        if isinstance(value, cls):
            return name
    return f"a {type(value).__name__}"


TOML: Final = Vocabulary(kind_of=toml_kind, expected=_TOML_TYPES, integral_floats=False)


@attrs.frozen
class Rule:
    """How one field is read from the file (``check``) and written back (``dump``)."""

    check: Callable[[object], object]
    dump: Callable[[Any], object] | None = None


def rule(check: Callable[[object], object], dump: Callable[[Any], object] | None = None) -> Any:
    """Field metadata attaching ``check`` (and ``dump``, for values not kept as written)."""
    return {RULE: Rule(check, dump)}


def field_rule(field: attrs.Attribute[Any]) -> Rule | None:
    found: Rule | None = field.metadata.get(RULE)
    return found


def text(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {toml_kind(value)}")
    return value


def optional_text(value: object) -> str | None:
    """A string where ``""`` means "not set" (``target_dir = ""`` is no target directory)."""
    return text(value) or None


def image(value: object) -> str | None:
    """An image reference; ``""`` = none. No spaces or tabs (Go's ``no_whitespace``)."""
    checked = optional_text(value)
    if checked is not None and any(char in checked for char in " \t"):
        raise Invalid(f"{checked!r} is not an image reference (it contains whitespace)")
    return checked


def required_text(value: object) -> str:
    checked = text(value)
    if not checked.strip():
        raise Invalid("must not be empty")
    return checked


def duration(value: object) -> float:
    """Seconds from ``"90s"``-style text or a bare number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(f'expected a duration such as "90s", got {toml_kind(value)}')
    try:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise Invalid(f"{value!r} is not a duration ({DURATION_HINT})")
    return seconds


def positive_duration(value: object) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise Invalid("must be longer than 0s")
    return seconds


def dispatch_timeout(value: object) -> float:
    """A positive duration; ``0s`` is refused with the fix, since Go's YAML reads it as 60 s."""
    seconds = duration(value)
    if seconds <= 0:
        raise Invalid(
            "must be longer than 0s: leave the key out for the default 60s (the Go worker's "
            "YAML reads 0s as 60s; ozw's TOML says what it means)"
        )
    return seconds


def at_least(minimum: int, meaning: str = "") -> Callable[[object], int]:
    """A check for an integer no smaller than ``minimum`` (``meaning`` explains it)."""

    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer, got {toml_kind(value)}")
        if value < minimum:
            raise Invalid(f"must be >= {minimum}{meaning}, got {value}")
        return value

    return check


def url_problem(text: str, schemes: tuple[str, ...], *, shown: str | None = None) -> str | None:
    """Why ``text`` is not a URL with one of ``schemes`` and a host (None when it is).

    ``shown`` replaces ``text`` in the message (for URLs that may carry credentials).
    """
    wanted = " or ".join(f"{scheme}://" for scheme in schemes)
    quoted = repr(text) if shown is None else shown
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        detail = f" ({exc})" if shown is None else ""
        return f"must be a {wanted} URL, got {quoted}{detail}"
    if parts.scheme not in schemes or not parts.hostname:
        return f"must be a {wanted} URL, got {quoted}"
    return None


def url(schemes: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        checked = text(value)
        problem = url_problem(checked, schemes)
        if problem is not None:
            raise Invalid(problem)
        return checked

    return check


def optional_url(schemes: tuple[str, ...]) -> Callable[[object], str | None]:
    check = url(schemes)
    return lambda value: check(value) if text(value) else None


def redact_url(value: str) -> str:
    """``value`` with any ``user:password@`` replaced by ``***@``: safe to print."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return value
    return f"{scheme}{sep}***@{authority.rpartition('@')[2]}{slash}{path}"


PROXY_SCHEMES: Final = ("http", "https", "socks5", "socks5h")


def proxy_url(value: object) -> str | None:
    """A proxy URL (credentials allowed, never shown); ``""`` = none."""
    checked = text(value)
    if not checked:
        return None
    problem = url_problem(checked, PROXY_SCHEMES, shown=repr(redact_url(checked)))
    if problem is not None:
        raise Invalid(problem)
    return checked


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:9090`` means all interfaces) → (host, port); ValueError if bad."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'{text!r} is not HOST:PORT (e.g. "127.0.0.1:9090")')
    return host.strip("[]") or "0.0.0.0", int(port)


def address(value: object) -> str | None:
    """``HOST:PORT`` for the metrics endpoint (``:9090`` = all interfaces); ``""`` = off."""
    checked = text(value)
    if checked:
        try:
            parse_address(checked)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
    return checked or None


def worker_id(value: object) -> str:
    """Go's rule (main.go): not empty, not starting with ``warp`` (ids Warp keeps)."""
    checked = text(value)
    if not checked:
        raise Invalid("must not be empty")
    if checked.startswith("warp"):
        raise Invalid(f"{checked!r} is reserved (ids starting with 'warp' belong to Warp)")
    return checked


def value_warnings(config: Any) -> list[str]:
    """Values accepted as Go accepts them that an operator may not mean (one line each)."""
    found: list[str] = []
    if config.worker_id.lower().startswith("warp") or config.worker_id.strip() != config.worker_id:
        found.append(
            f"worker_id {config.worker_id!r}: accepted as the Go worker does, but it "
            "looks like Warp's own or has surrounding spaces"
        )
    idle = config.idle_on_complete
    if idle is not None:
        try:
            parse_duration(idle)
        except ValueError:
            found.append(
                f"idle_on_complete {idle!r}: not a duration ozw reads ({DURATION_HINT}); "
                "passed to the agent as written, as the Go worker does"
            )
        else:
            if BARE_NUMBER_RE.fullmatch(idle):
                found.append(
                    f"idle_on_complete {idle!r}: no unit; passed to the agent as "
                    f"written, which may not read it as {idle}s"
                )
    return found


def env_name(value: object) -> str:
    name = text(value)
    if not name:
        raise Invalid("environment variable name must not be empty")
    if "=" in name or any(char.isspace() for char in name):
        raise Invalid(f"{name!r} is not a valid environment variable name (no '=' or spaces)")
    return name


WS_SCHEMES: Final = ("ws", "wss")
HTTP_SCHEMES: Final = ("http", "https")

DURATION: Final = rule(duration, format_duration)
POSITIVE_DURATION: Final = rule(positive_duration, format_duration)
