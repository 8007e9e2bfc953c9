"""Run a backend's async contract test under Trio and under asyncio.

Backends are anyio-compatible (the worker core stays Trio), so their contract tests
must pass on both event loops. pytest-trio's ``trio_mode`` claims every ``async def``
test for Trio, so :func:`on_both_loops` turns an async test into a plain one,
parametrised by ``event_loop``, that runs the coroutine with :func:`anyio.run`. Such a
test may use only anyio APIs and synchronous fixtures.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

EVENT_LOOPS = ("trio", "asyncio")


def on_both_loops(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Decorate an ``async def`` test: it runs once per event loop in :data:`EVENT_LOOPS`."""

    @functools.wraps(test)
    def run(*args: Any, event_loop: str, **kwargs: Any) -> None:
        anyio.run(functools.partial(test, *args, **kwargs), backend=event_loop)

    signature = inspect.signature(test)
    loop = inspect.Parameter("event_loop", inspect.Parameter.KEYWORD_ONLY, annotation=str)
    run.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), loop]
    )
    del run.__wrapped__  # pytest must see the new signature, not the coroutine's
    parametrised: Callable[..., None] = pytest.mark.parametrize("event_loop", EVENT_LOOPS)(run)
    return parametrised
