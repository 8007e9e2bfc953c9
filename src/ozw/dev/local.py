"""A local dispatch server and a worker wired together, for demo, smoke, bench and tests.

:func:`open_local_worker` starts a :class:`~ozw.dev.server.DispatchServer` on 127.0.0.1
and a :class:`~ozw.worker.Worker` connected to it, runs the body, then stops the
worker gracefully (as the first Ctrl-C would) and waits for it to finish.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import trio

from ozw.backends.base import Backend
from ozw.config import WorkerConfig
from ozw.dev.server import DispatchServer
from ozw.link.connection import ConnectionSettings
from ozw.worker import Worker


@attrs.define
class LocalWorker:
    """The running pair, and how the worker ended once it has."""

    server: DispatchServer
    worker: Worker
    stopped: trio.Event = attrs.field(factory=trio.Event)
    """Set when the worker's run has returned (stopped by the body or a signal)."""
    exit_code: int | None = None


@contextlib.asynccontextmanager
async def open_local_worker(
    config: WorkerConfig,
    backend: Backend,
    *,
    server: DispatchServer | None = None,
    timings: Mapping[str, float] | None = None,
    handle_signals: bool = False,
    flush_timeout: float | None = None,
    stop_reason: str = "local run over",
) -> AsyncIterator[LocalWorker]:
    """Run ``config``'s worker on ``backend`` against a local dispatch server.

    ``server`` (not yet serving) lets the caller hook its messages first; by default
    one is made with ``config.api_key`` (or a fresh key). ``timings`` override the
    :class:`~ozw.link.connection.ConnectionSettings` timings (tests use milliseconds). The
    backend is entered here and closed after the worker stopped.
    """
    if server is None:
        server = DispatchServer(config.api_key or secrets.token_urlsafe(16))
    async with backend, trio.open_nursery() as nursery:
        await nursery.start(server.serve, "127.0.0.1", 0)
        local_config = attrs.evolve(
            config,
            api_key=server.api_key,
            server=attrs.evolve(config.server, websocket_url=server.url),
        )
        # Straight to 127.0.0.1: no proxy applies to the local server.
        overrides: dict[str, Any] = dict(timings or {})
        settings = attrs.evolve(
            ConnectionSettings(server.url, config.worker_id, server.api_key), **overrides
        )
        extra: dict[str, Any] = {} if flush_timeout is None else {"flush_timeout": flush_timeout}
        worker = Worker(local_config, backend, connection_settings=settings, **extra)
        local = LocalWorker(server, worker)

        async def run_worker(*, task_status: trio.TaskStatus[Worker]) -> None:
            local.exit_code = await worker.run(
                handle_signals=handle_signals, task_status=task_status
            )
            local.stopped.set()

        await nursery.start(run_worker)
        await worker.connection.wait_connected()
        try:
            yield local
        finally:
            worker.request_stop(stop_reason)
            await local.stopped.wait()
            nursery.cancel_scope.cancel()
