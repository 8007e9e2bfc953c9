"""The WebSocket session with the dispatch server (docs/protocol.md).

One :class:`Connection` dials, re-dials with exponential back-off, keeps the link
alive with pings, declares it dead after a silence, and closes it with code 1000 on
shutdown. Inside one session these tasks run: the reader (decodes frames and hands
them to the worker), the single writer (drains the :class:`~ozw.link.outbox.Outbox`),
the confirmer (a ping after what was written: its pong confirms it) and the heartbeat.
The session lives inside a cancel scope whose deadline every frame and pong moves on:
once it passes, the server has been silent for too long.
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Final

import attrs
import trio

from ozw.link.dial import describe_error, open_websocket
from ozw.link.outbox import Outbox, WriteProgress
from ozw.link.proxy import Proxy
from ozw.link.websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    close_text,
)
from ozw.tasks.deadlines import CLOSE_TIMEOUT
from ozw.wire.codec import (
    ProtocolError,
    ServerMessage,
    WorkerMessage,
    decode_server_message,
    encode_message,
    message_type,
)

log = logging.getLogger(__name__)

DIAL_FAILED: Final = "dial_failed"
REMOTE_CLOSE: Final = "remote_close"
UNAUTHORISED: Final = "unauthorised"
"""The kind of :class:`Lost` for an API key the server rejected (HTTP 401 or 403)."""
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""Assignments carry whole task definitions; 1 MiB (the library default) is too tight."""


@attrs.frozen
class ConnectionSettings:
    """Where and how to connect. The timings are settings so tests run in milliseconds."""

    websocket_url: str
    worker_id: str
    api_key: str = attrs.field(repr=False)
    ping_interval: float = 30.0
    dead_after: float = 60.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    connect_timeout: float = 30.0
    close_timeout: float = CLOSE_TIMEOUT
    proxy: Proxy | None = None
    """The proxy to dial through (``ozw.link.proxy.choose_proxy``), None to dial directly."""
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, repr=False)
    """For ``wss://``; None trusts the system's certificate authorities."""


def worker_url(websocket_url: str, worker_id: str) -> str:
    """Add ``worker_id=<id>`` to whatever query the URL already has."""
    parts = urllib.parse.urlsplit(websocket_url)
    # The existing query stays byte for byte (re-encoding could change what it means).
    ours = urllib.parse.urlencode({"worker_id": worker_id})
    query = f"{parts.query}&{ours}" if parts.query else ours
    return urllib.parse.urlunsplit(parts._replace(query=query))


def loggable_url(url: str) -> str:
    """``url`` without user info (credentials) and query, for log lines."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query="", fragment=""))


def backoff_delays(initial: float, maximum: float) -> Callable[[], float]:
    """A generator of back-off delays: initial, doubling, capped at maximum."""
    delay = initial

    def next_delay() -> float:
        nonlocal delay
        current = delay
        delay = min(delay * 2, maximum)
        return current

    return next_delay


class _SilentServer(Exception):
    pass


class Connection:
    """Keeps the worker connected; hands every decoded server message to ``on_message``.

    ``on_message`` is called synchronously from the reader task and must not block.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        outbox: Outbox,
        on_message: Callable[[ServerMessage], None],
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.on_message = on_message
        self.connected = False
        self.connects = 0
        self.last_error: str | None = None
        self.failed_attempts = 0
        self.on_state_change: Callable[[bool, str], None] | None = None
        """Called with (connected, why): why is "connected", "shutdown" or a Lost.kind."""
        self.on_lost: Callable[[str], None] | None = None
        """Called after every failed dial (:data:`DIAL_FAILED`) and every session that
        ended (:data:`REMOTE_CLOSE`), except on purpose."""
        self.on_failure: Callable[[Lost], None] | None = None
        """Called with why, after every failed dial or lost session (before the back-off)."""
        self._closing = trio.Event()
        self._wake = trio.Event()
        self._delays = backoff_delays(settings.backoff_initial, settings.backoff_max)
        self._closed = trio.Event()
        self._state_changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected until :meth:`close` is called."""
        task_status.started()
        url = worker_url(self.settings.websocket_url, self.settings.worker_id)
        try:
            while not self._closing.is_set():
                lost = await self._session(url)
                if lost is None:
                    # A session that ended because we are closing.
                    break
                ended = REMOTE_CLOSE if self.connected else DIAL_FAILED
                if self.connected:
                    self._reset_backoff()
                if self.on_lost is not None:
                    self.on_lost(ended)
                self.last_error = lost.text
                self.failed_attempts += 1
                self._set_connected(False, lost.kind)
                self._notify()
                if self.on_failure is not None:
                    self.on_failure(lost)
                delay = self._delays()
                log.warning("connection: %s; reconnecting in %.3gs", lost.text, delay)
                self._wake = trio.Event()
                with trio.move_on_after(delay):
                    await self._wake.wait()
        finally:
            self._set_connected(False, "shutdown")
            self._closed.set()

    async def close(self) -> None:
        """Close the connection with code 1000 and stop re-dialling."""
        self._closing.set()
        self._wake.set()
        await self._closed.wait()

    def redial_now(self) -> None:
        """Cut the current back-off short and dial again at the initial pace."""
        self._reset_backoff()
        self._wake.set()

    def _reset_backoff(self) -> None:
        self._delays = backoff_delays(self.settings.backoff_initial, self.settings.backoff_max)

    async def wait_connected(self, connected: bool = True) -> None:
        """Wait until the connection is up (or, with False, down)."""
        while self.connected != connected:
            await self._state_changed.wait()

    async def wait_failed_attempt(self) -> None:
        """Wait until the next dial fails or the next connection is lost."""
        target = self.failed_attempts + 1
        while self.failed_attempts < target:
            await self._state_changed.wait()

    def _notify(self) -> None:
        self._state_changed.set()
        self._state_changed = trio.Event()

    def _set_connected(self, connected: bool, reason: str) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        self._notify()
        if self.on_state_change is not None:
            self.on_state_change(connected, reason)

    async def _session(self, url: str) -> Lost | None:
        """One connection's life. Returns why it ended (None: closed on purpose)."""
        headers = [(b"Authorization", f"Bearer {self.settings.api_key}".encode())]
        try:
            async with open_websocket(
                url,
                proxy=self.settings.proxy,
                ssl_context=self.settings.ssl_context,
                extra_headers=headers,
                connect_timeout=self.settings.connect_timeout,
                disconnect_timeout=self.settings.close_timeout,
                max_message_size=MAX_MESSAGE_SIZE,
            ) as ws:
                self.connects += 1
                self._set_connected(True, "connected")
                via = f" through proxy {self.settings.proxy}" if self.settings.proxy else ""
                log.info("connected to %s%s", loggable_url(self.settings.websocket_url), via)
                await self._serve(ws)
                return None
        except Exception as exc:  # one exception: open_websocket collapses its groups
            # Whatever breaks a connection (a proxy speaking garbage, a TLS failure, a
            # library error) must never stop the worker: log it and dial again.
            if not isinstance(exc, _CONNECTION_ERRORS):
                log.error(
                    "unexpected %s on the connection: %s",
                    type(exc).__name__,
                    describe_error(exc),
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            return why_lost(exc, self.settings.dead_after)

    async def _serve(self, ws: WebSocketConnection) -> None:
        silence = trio.CancelScope()

        def heard() -> None:
            # A frame or a pong: the server lives. Silent for dead_after, it is dead.
            silence.deadline = trio.current_time() + self.settings.dead_after

        heard()
        with silence:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, ws, heard)
                written = WriteProgress(self.outbox.first_unconfirmed_seq() - 1)
                nursery.start_soon(self._write, ws, written)
                nursery.start_soon(self._confirm, ws, heard, written)
                nursery.start_soon(self._heartbeat, ws, heard)
                await self._closing.wait()
                nursery.cancel_scope.cancel()
            # Closing on purpose: a normal close, bounded so a dead peer cannot hold us.
            with trio.move_on_after(self.settings.close_timeout):
                await ws.aclose(code=1000, reason="worker shutting down")
            log.info("connection closed")
            return
        raise _SilentServer

    async def _read(self, ws: WebSocketConnection, heard: Callable[[], None]) -> None:
        while True:
            frame = await ws.get_message()
            heard()
            try:
                message = decode_server_message(frame)
            except ProtocolError as exc:
                log.warning("skipped a malformed message: %s", exc)
                continue
            _log_frame("in", message)
            self.on_message(message)

    async def _write(self, ws: WebSocketConnection, written: WriteProgress) -> None:
        cursor = written.seq + 1
        while True:
            for entry in await self.outbox.wait_from(cursor):
                _log_frame("out", entry.message)
                await ws.send_message(encode_message(entry.message))
                cursor = entry.seq + 1
                written.advance(entry.seq)

    async def _confirm(
        self, ws: WebSocketConnection, heard: Callable[[], None], written: WriteProgress
    ) -> None:
        # One ping in flight at a time, covering everything written before it: under
        # load a ping per batch would cost as much as the messages themselves.
        confirmed = written.seq
        while True:
            await written.wait_beyond(confirmed)
            target = written.seq
            # The pong comes after the server read every frame we wrote before the ping.
            await ws.ping()
            heard()
            self.outbox.confirm_through(target)
            confirmed = target

    async def _heartbeat(self, ws: WebSocketConnection, heard: Callable[[], None]) -> None:
        while True:
            await trio.sleep(self.settings.ping_interval)
            await ws.ping()
            heard()


def _log_frame(direction: str, message: ServerMessage | WorkerMessage) -> None:
    """A debug line for a frame, by type and task (never its contents: they hold secrets)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    kind = message_type(message)
    fields = {"event": f"frame_{direction}", "frame": kind}
    task_id = getattr(message, "task_id", None)
    if task_id is not None:
        fields["task_id"] = task_id
    log.debug("frame %s: %s", direction, kind, extra=fields)


_CONNECTION_ERRORS = (
    HandshakeError,
    ConnectionClosed,
    _SilentServer,
    OSError,
    trio.BrokenResourceError,
)


@attrs.frozen
class Lost:
    """Why a connection ended or could not be made: a metric label and one line."""

    kind: str
    """unauthorised (the key), refused, dial_failed, closed, silent or error."""
    text: str


def why_lost(exc: BaseException, dead_after: float) -> Lost:
    """Why a dial failed or a connection ended, for the log and ``ozw check``."""
    match exc:
        case ConnectionRejected() if exc.status_code in (401, 403):
            return Lost(
                UNAUTHORISED, f"API key rejected: check WARP_API_KEY (HTTP {exc.status_code})"
            )
        case ConnectionRejected():
            return Lost("refused", f"server refused the connection (HTTP {exc.status_code})")
        case ConnectionClosed():
            return Lost("closed", f"connection closed by the server ({close_text(exc.reason)})")
        case _SilentServer():
            return Lost("silent", f"no word from the server for {dead_after:g}s")
        case OSError() | HandshakeError():
            return Lost("dial_failed", f"cannot connect: {describe_error(exc)}")
    return Lost("error", f"connection failed: {type(exc).__name__}: {describe_error(exc)}")
