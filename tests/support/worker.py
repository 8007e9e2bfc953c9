"""A dispatch server and a worker for tests: the running-worker fixture and its parts."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any, Final

import trio

from ozw.backends.base import Backend
from ozw.config import WorkerConfig
from ozw.dev.local import LocalWorker, open_local_worker
from ozw.dev.server import DispatchServer
from ozw.link.connection import Connection, ConnectionSettings
from ozw.link.outbox import Outbox
from ozw.wire.codec import Task, TaskAssignment, TaskCompleted, TaskFailed, WorkerMessage
from ozw.worker import Worker

API_KEY: Final = "test-key-0123456789"
FAST_TIMINGS: Final = {
    "ping_interval": 0.05,
    "dead_after": 0.5,
    "backoff_initial": 0.01,
    "backoff_max": 0.1,
    "connect_timeout": 2.0,
    "close_timeout": 1.0,
}
"""Protocol timings scaled down so tests run in milliseconds."""


def fast_settings(url: str, worker_id: str = "w1", **overrides: Any) -> ConnectionSettings:
    """Connection settings with :data:`FAST_TIMINGS`."""
    return ConnectionSettings(url, worker_id, API_KEY, **{**FAST_TIMINGS, **overrides})


async def dial_once(settings: ConnectionSettings, *, succeed: bool) -> Connection:
    """A connection run until it connects (``succeed``) or a dial fails, then closed."""
    connection = Connection(settings, Outbox(), lambda _: None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        with trio.fail_after(20):
            if succeed:
                await connection.wait_connected()
            else:
                await connection.wait_failed_attempt()
        await connection.close()
    return connection


@contextlib.asynccontextmanager
async def running_worker(backend: Backend, **config: Any) -> AsyncIterator[LocalWorker]:
    """A worker ``w1`` on ``backend`` (``config``: WorkerConfig fields) connected to a
    local dispatch server; stopped gracefully at the end of the block."""
    async with open_local_worker(
        WorkerConfig(worker_id="w1", api_key=API_KEY, **config),
        backend,
        timings=FAST_TIMINGS,
        stop_reason="test over",
    ) as local:
        yield local


async def start_server(nursery: trio.Nursery, port: int = 0) -> DispatchServer:
    """A dispatch server alone (for tests that restart it or dial it themselves)."""
    server = DispatchServer(API_KEY)
    await nursery.start(server.serve, "127.0.0.1", port)
    return server


async def start_stoppable_server(
    nursery: trio.Nursery, port: int = 0
) -> tuple[DispatchServer, trio.CancelScope]:
    """A dispatch server and the scope that takes it away (as a crash or restart would);
    ``port`` brings one back where a previous one listened."""
    scope = trio.CancelScope()
    server = DispatchServer(API_KEY)

    async def serve(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            async with trio.open_nursery() as inner:
                await inner.start(server.serve, "127.0.0.1", port)
                task_status.started()
                await trio.sleep_forever()

    await nursery.start(serve)
    return server, scope


async def start_worker(
    nursery: trio.Nursery,
    url: str,
    backend: Backend,
    *,
    settings: ConnectionSettings | None = None,
    **config: Any,
) -> Worker:
    """A worker dialling ``url`` (which may not answer yet), run in ``nursery``."""
    worker = Worker(
        WorkerConfig(worker_id="w1", api_key=API_KEY, **config),
        backend,
        connection_settings=settings or fast_settings(url),
    )
    await nursery.start(functools.partial(worker.run, handle_signals=False))
    return worker


def assignment(task_id: str, behaviour: str = "ok", **extra: Any) -> TaskAssignment:
    return TaskAssignment(task_id, Task(id=task_id), env_vars={"BEHAVIOUR": behaviour}, **extra)


def terminal_for(task_id: str) -> Any:
    def match(message: WorkerMessage) -> bool:
        return message.task_id == task_id and isinstance(message, TaskCompleted | TaskFailed)

    return match
