"""Durations, the one way ozw reads and writes them: ``"500ms"``, ``"90s"``, ``"45m"``, ``"1h30m"``.

The same text is accepted in the config file, in flags and shown in messages, so an
operator can paste what a log line says back into the file. What the Go worker's
configs hold reads too: Go's ``"1h30m0s"`` and the agent's ``"2d"`` / ``"1h 30m"``.
"""

from __future__ import annotations

import re
from typing import Final

# Each unit at most once, largest first, optionally one space between parts.
_DURATION_RE: Final = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d ?)?"
    r"(?:(?P<h>\d+(?:\.\d+)?)h ?)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m ?)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)s ?)?"
    r"(?:(?P<ms>\d+(?:\.\d+)?)ms)?"
)
_UNIT_SECONDS: Final = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
BARE_NUMBER_RE: Final = re.compile(r"\d+(?:\.\d+)?")
DURATION_HINT: Final = 'use e.g. "500ms", "90s", "45m", "1h30m" or "2d"'


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``"500ms"``, ``"90s"``, ``"1h 30m"``, ``"2d"``; ``"90"`` = 90 s.

    Units go from largest to smallest, each at most once, so a typo such as
    ``"1m1h"`` is an error rather than a surprise.

    Raises:
        ValueError: ``text`` is not such a duration (the message says why, in one line).
    """
    if BARE_NUMBER_RE.fullmatch(text):
        return float(text)
    match = _DURATION_RE.fullmatch(text)
    if text.strip() != text or match is None or not any(match.groupdict().values()):
        raise ValueError(f"{text!r} is not a duration ({DURATION_HINT})")
    return sum(
        float(amount) * _UNIT_SECONDS[unit]
        for unit, amount in match.groupdict().items()
        if amount is not None
    )


def format_duration(seconds: float) -> str:
    """``seconds`` as :func:`parse_duration` reads it, to the millisecond.

    ``0.3`` → ``"0.3s"``, ``90`` → ``"90s"``, ``120`` → ``"2m"``, ``5400`` → ``"1h30m"``.
    Under two minutes it stays in seconds: ``"90s"`` reads better than ``"1m30s"``.
    """
    total_ms = round(seconds * 1000)
    if total_ms < 120_000:
        return _seconds(total_ms)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    text = "".join(f"{amount}{unit}" for unit, amount in (("h", hours), ("m", minutes)) if amount)
    return text + _seconds(rest) if rest else text


def _seconds(total_ms: int) -> str:
    return f"{total_ms / 1000:g}s"


_GO_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART_RE: Final = re.compile(r"(\d*(?:\.\d*)?)([^\d.]+)")


def parse_go_duration(text: str) -> float:
    """Seconds in ``text`` as Go's ``time.ParseDuration`` reads it (the Go worker's YAML).

    Go's grammar: an optional sign, then one or more ``<number><unit>`` parts in any
    order (``"1m1h"``, ``"1.5h"``, ``"300ms"``, ``"-5s"``); ``"0"`` is the only number
    without a unit; units ns, us, µs, ms, s, m, h.

    Raises:
        ValueError: Go would refuse ``text`` too.
    """
    body = text[1:] if text[:1] in ("-", "+") else text
    if body == "0":
        return 0.0
    position, total = 0, 0.0
    while position < len(body):
        match = _GO_PART_RE.match(body, position)
        number = match.group(1) if match else ""
        if match is None or number in ("", ".") or match.group(2) not in _GO_UNIT_SECONDS:
            break
        total += float(number) * _GO_UNIT_SECONDS[match.group(2)]
        position = match.end()
    else:
        if body:
            return -total if text.startswith("-") else total
    raise ValueError(f'{text!r} is not a Go duration (e.g. "90s", "1h30m", "300ms")')
