"""Exit codes, and the command line's last line of defence: whatever escapes ends as one line.

Trio wraps errors in exception groups (``strict_exception_groups``), so a failure
deep in a nursery reaches ``main`` as a group, perhaps nested, perhaps beside the
``Cancelled`` of its siblings. :func:`outcome_of` takes the error that matters
(:func:`ozw.exception_groups.cause`) and words it as the one ``ozw: error: ...``
line an operator sees, with its exit code.
"""

from __future__ import annotations

import os
from typing import Final

import trio

from ozw.exception_groups import cause

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
"""The command could not do its work (e.g. the worker's backend is unavailable)."""
EXIT_USAGE: Final = 2
"""A usage or configuration error."""
EXIT_INTERRUPTED: Final = 130
"""Stopped by Ctrl-C (128 + SIGINT), as shells report it."""
TRACEBACK_ENV: Final = "OZW_TRACEBACK"
"""Set (to anything) to see the traceback of an unexpected error as well."""


def outcome_of(exc: BaseException) -> tuple[int, str | None]:
    """The exit code for ``exc`` escaping a command, and the error line (None: silent).

    Ctrl-C anywhere in the group means "interrupted" (130, silent); otherwise the
    first real error is the cause. ``SystemExit`` is the caller's to let through.
    """
    found = cause(exc)
    if isinstance(found, KeyboardInterrupt | trio.Cancelled):
        return EXIT_INTERRUPTED, None
    return EXIT_FAILURE, f"ozw: error: {describe(found)}"


def describe(exc: BaseException) -> str:
    """``exc`` as one line: what went wrong, not where in the code."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if _is_ours(exc):
        return text
    hint = "" if os.environ.get(TRACEBACK_ENV) else f" (set {TRACEBACK_ENV}=1 for the traceback)"
    return f"unexpected {type(exc).__name__}: {text}{hint}"


def _is_ours(exc: BaseException) -> bool:
    """Errors ozw raises on purpose carry a message meant for the operator."""
    return type(exc).__module__.split(".")[0] == "ozw"
