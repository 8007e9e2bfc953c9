"""A local dispatch server speaking docs/protocol.md: for tests, the demo and smoke runs.

It is a real WebSocket server: it checks the bearer key, records every message a
worker sends, and lets code (or the ``ozw dev-server`` command, :mod:`ozw.dev.command`)
send assignments and cancellations to the connected worker.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
import trio_websocket as tws

from ozw.wire.codec import (
    ProtocolError,
    TaskAssignment,
    TaskCancellation,
    WorkerMessage,
    decode_worker_message,
    encode_message,
    prepare,
)

log = logging.getLogger(__name__)


@attrs.frozen
class Received:
    """One message a worker sent, with the worker id of its connection."""

    worker_id: str | None
    message: WorkerMessage
    frame: str


class DispatchServer:
    """A dispatch server for one or more workers on 127.0.0.1.

    Messages go to the most recent connection; :meth:`send` waits for one.
    """

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.received: list[Received] = []
        self.bad_frames: list[str] = []
        self.rejected_handshakes = 0
        self.paths: list[str] = []
        self.connections = 0
        self.port: int | None = None
        self.scheme = "ws"
        self.on_receive: list[Callable[[Received], None]] = []
        self._current: tws.WebSocketConnection | None = None
        self._current_worker: str | None = None
        self._changed = trio.Event()
        self._scopes: list[trio.CancelScope] = []

    @property
    def url(self) -> str:
        assert self.port is not None, "the server is not listening yet"
        return f"{self.scheme}://127.0.0.1:{self.port}/api/v1/selfhosted/worker/ws"

    @property
    def connected(self) -> bool:
        return self._current is not None

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; reports the bound port through ``task_status``.

        With ``ssl_context`` it speaks ``wss://`` (tests of TLS through a proxy).
        """
        self.scheme = "wss" if ssl_context else "ws"
        prepare()  # the first assignment is then sent as fast as the rest

        async def start(*, task_status: trio.TaskStatus[tws.WebSocketServer]) -> None:
            await tws.serve_websocket(
                self._handle,
                host,
                port,
                ssl_context=ssl_context,
                max_message_size=16 * 1024 * 1024,
                task_status=task_status,
            )

        async with trio.open_nursery() as nursery:
            server = await nursery.start(start)
            self.port = server.port
            task_status.started(server.port)

    async def _handle(self, request: tws.WebSocketRequest) -> None:
        self.paths.append(request.path)
        auth = dict((k.lower(), v) for k, v in request.headers).get(b"authorization", b"")
        if auth != f"Bearer {self.api_key}".encode():
            self.rejected_handshakes += 1
            log.warning("rejected a worker with a wrong or missing API key")
            await request.reject(401, body=b"unauthorized")
            self._notify()
            return
        worker_id = _query_value(request.path, "worker_id")
        ws = await request.accept()
        self.connections += 1
        self._current, self._current_worker = ws, worker_id
        self._notify()
        log.info("worker %s connected", worker_id)
        with trio.CancelScope() as scope:
            self._scopes.append(scope)
            try:
                while True:
                    frame = await ws.get_message()
                    text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
                    try:
                        message = decode_worker_message(text)
                    except ProtocolError as exc:
                        log.warning("bad frame from worker %s: %s", worker_id, exc)
                        self.bad_frames.append(text)
                        continue
                    record = Received(worker_id, message, text)
                    self.received.append(record)
                    for hook in self.on_receive:
                        hook(record)
                    self._notify()
            except tws.ConnectionClosed:
                pass
            finally:
                self._scopes.remove(scope)
                if self._current is ws:
                    self._current = None
                    self._notify()
                log.info("worker %s disconnected", worker_id)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_connected(self) -> tws.WebSocketConnection:
        while self._current is None:
            await self._changed.wait()
        return self._current

    async def send(self, message: TaskAssignment | TaskCancellation | str) -> None:
        """Send a message (or a raw text frame) to the connected worker."""
        ws = await self.wait_connected()
        frame = message if isinstance(message, str) else encode_message(message)
        await ws.send_message(frame)

    async def wait_for(self, predicate: Callable[[WorkerMessage], bool]) -> WorkerMessage:
        """Wait until the worker has sent a message matching ``predicate``; return it."""
        seen = 0
        while True:
            for record in self.received[seen:]:
                if predicate(record.message):
                    return record.message
            seen = len(self.received)
            await self._changed.wait()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds (re-checked after every event)."""
        while not condition():
            await self._changed.wait()

    def messages_for(self, task_id: str) -> list[WorkerMessage]:
        return [r.message for r in self.received if r.message.task_id == task_id]

    def drop_connections(self) -> None:
        """End every worker connection from the server's side."""
        for scope in list(self._scopes):
            scope.cancel()


def _query_value(path: str, key: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get(key)
    return values[0] if values else None
