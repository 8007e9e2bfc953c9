"""Start a dispatch server and a worker (with the scripted backend) in a test's nursery."""

from __future__ import annotations

import functools
from typing import Any

import trio

from ozw.backends.base import Backend
from ozw.config import WorkerConfig
from ozw.connection import ConnectionSettings
from ozw.devserver import DispatchServer
from ozw.protocol import Task, TaskAssignment, TaskCompleted, TaskFailed, WorkerMessage
from ozw.runner import Worker

API_KEY = "test-key-0123456789"


def fast_settings(url: str, worker_id: str = "w1", **overrides: Any) -> ConnectionSettings:
    """Protocol timings scaled down so tests run in milliseconds."""
    values: dict[str, Any] = {
        "ping_interval": 0.05,
        "dead_after": 0.5,
        "backoff_initial": 0.01,
        "backoff_max": 0.1,
        "connect_timeout": 2.0,
        "close_timeout": 1.0,
    }
    values.update(overrides)
    return ConnectionSettings(url, worker_id, API_KEY, **values)


async def start_server(nursery: trio.Nursery, port: int = 0) -> DispatchServer:
    server = DispatchServer(API_KEY)
    await nursery.start(server.serve, "127.0.0.1", port)
    return server


async def start_stoppable_server(nursery: trio.Nursery) -> tuple[DispatchServer, trio.CancelScope]:
    """A dispatch server and the scope that takes it away (as a crash or restart would)."""
    scope = trio.CancelScope()
    server = DispatchServer(API_KEY)

    async def serve(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            async with trio.open_nursery() as inner:
                await inner.start(server.serve, "127.0.0.1", 0)
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
