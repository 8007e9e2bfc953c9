"""The one place exception groups are unwrapped.

Trio wraps whatever escapes a nursery in a group (``strict_exception_groups``), perhaps
nested, perhaps beside the ``Cancelled`` of the failed task's siblings. Where a
nursery's errors meet code that handles one error, :func:`collapsed` raises that one
error instead (as ``trio.open_tcp_stream`` raises one OSError for its attempts);
:func:`leaves` is for the few places that look through a group without raising.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``exc``, group nesting flattened, in order."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def cause(exc: BaseException) -> BaseException:
    """The error that explains ``exc``: Ctrl-C anywhere in it, else its first leaf that
    is not a sibling's ``Cancelled`` (the echo of the failure, never its cause)."""
    found = list(leaves(exc))
    interrupts = [leaf for leaf in found if isinstance(leaf, KeyboardInterrupt)]
    real = [leaf for leaf in found if not isinstance(leaf, trio.Cancelled)]
    return (interrupts or real or found)[0]


@contextmanager
def collapsed() -> Iterator[None]:
    """Around a nursery: its group comes out as its :func:`cause` (a group of nothing
    but ``Cancelled`` is left alone, for the cancel scope that caused it)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = cause(group)
        if isinstance(leaf, trio.Cancelled):
            raise
        context = leaf.__context__
        try:
            raise leaf
        finally:
            # The leaf keeps its own context, not the group it came out of.
            leaf.__context__ = context
            del leaf, context
