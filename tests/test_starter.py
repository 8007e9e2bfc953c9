"""The starter thread: one lasting thread runs every start, its errors reach the caller,
and a cancelled caller still gets what was started."""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import pytest

from ozw.backends.execution.starter import Starter
from tests.support.event_loops import on_both_loops


def refuse() -> None:
    raise ValueError("refused")


@on_both_loops
async def test_every_call_runs_on_one_thread_that_outlives_idle_workers() -> None:
    starter = Starter()
    first = await starter.call(threading.get_ident)
    assert first != threading.get_ident()
    for _ in range(3):  # the loop's own worker threads come and go
        await anyio.to_thread.run_sync(lambda: None)
    assert await starter.call(threading.get_ident) == first
    with pytest.raises(ValueError, match="refused"):
        await starter.call(refuse)
    assert await starter.call(lambda: 42) == 42


@on_both_loops
async def test_a_cancelled_caller_still_gets_what_was_started() -> None:
    starter = Starter()
    started: list[int] = []
    got: list[int] = []

    def start() -> int:
        started.append(1)
        return len(started)

    with anyio.CancelScope() as scope:
        scope.cancel()
        got.append(await starter.call(start))
        await anyio.lowlevel.checkpoint()  # the cancellation lands here, after the result
    assert scope.cancelled_caught
    assert started == [1]
    assert got == [1]
