"""Exit codes, and the command line's last line of defence: whatever escapes ends as one line.

Trio wraps errors in exception groups (``strict_exception_groups``), so a failure
deep in a nursery reaches ``main`` as a group, perhaps nested, perhaps beside the
``Cancelled`` of its siblings. :func:`outcome_of` finds the error that matters and
words it as the one ``ozw: error: ...`` line an operator sees, with its exit code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Final

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
"""The command could not do its work (e.g. the worker's backend is unavailable)."""
EXIT_USAGE: Final = 2
"""A usage or configuration error."""
EXIT_INTERRUPTED: Final = 130
"""Stopped by Ctrl-C (128 + SIGINT), as shells report it."""
TRACEBACK_ENV: Final = "OZW_TRACEBACK"
"""Set (to anything) to see the traceback of an unexpected error as well."""


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``exc``, group nesting flattened, in order."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def _is_cancellation(exc: BaseException) -> bool:
    # trio.Cancelled is a sibling's echo of the real failure, never the cause.
    return type(exc).__name__ == "Cancelled" and type(exc).__module__.startswith("trio")


def outcome_of(exc: BaseException) -> tuple[int, str | None]:
    """The exit code for ``exc`` escaping a command, and the error line (None: silent).

    Ctrl-C anywhere in the group means "interrupted" (130, silent); otherwise the
    first real error is the cause. ``SystemExit`` is the caller's to let through.
    """
    found = [leaf for leaf in leaves(exc) if not _is_cancellation(leaf)]
    if not found or any(isinstance(leaf, KeyboardInterrupt) for leaf in found):
        return EXIT_INTERRUPTED, None
    return EXIT_FAILURE, f"ozw: error: {describe(found[0])}"


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
