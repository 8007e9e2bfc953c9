"""Independent steps of a task run at once, failing as the first of them would.

Inspecting the task image and each sidecar image, or checking each sidecar's volume,
are independent docker calls: run together they cost one round trip instead of one
each. The first failure in the steps' order is raised as itself, never inside an
exception group, exactly the one running them one after the other would raise: a
failing step cancels the steps after it, and the steps before it run to their end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

from ozw.tasks.failures import TaskFailure

T = TypeVar("T")


async def gather(steps: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``steps`` concurrently; their results in order, or the first TaskFailure."""
    if len(steps) == 1:
        return [await steps[0]()]
    results: dict[int, T] = {}
    failures: dict[int, TaskFailure] = {}
    scopes = [anyio.CancelScope() for _ in steps]

    async def one(index: int, step: Callable[[], Awaitable[T]]) -> None:
        with scopes[index]:
            try:
                results[index] = await step()
            except TaskFailure as failure:
                failures[index] = failure
                for later in scopes[index + 1 :]:
                    later.cancel()

    async with anyio.create_task_group() as tg:
        for index, step in enumerate(steps):
            tg.start_soon(one, index, step)
    if failures:
        raise failures[min(failures)]
    return [results[index] for index in range(len(steps))]
