"""The WebSocket session with the dispatch server (docs/protocol.md).

One :class:`Connection` dials, re-dials with exponential back-off, keeps the link
alive with pings, declares it dead after a silence, and closes it with code 1000 on
shutdown. Inside one session three tasks run: the reader (decodes frames and hands
them to the worker; under a burst it lets the work a read started run before reading
again, so the burst is handled in batches), the single writer (drains the
:class:`~ozw.link.outbox.Outbox`) and the heartbeat. The session lives inside a cancel
scope that a watchdog cancels once no frame or pong was heard for too long: the
server has been silent.
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Final

import attrs
import trio

from ozw.cli.exit_status import leaves
from ozw.link.dial import describe_error, open_websocket
from ozw.link.outbox import Outbox, WriteProgress
from ozw.link.proxy import Proxy
from ozw.link.websocket import ClientWebSocket, ConnectionClosed, ConnectionRejected, HandshakeError
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
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""Assignments carry whole task definitions; 1 MiB (the library default) is too tight."""

READ_PAUSE_PASSES: Final = 24
"""Scheduler passes the reader leaves to the rest of the worker after handling what one
read brought, before it reads again, while that work goes on. Under a burst the next
read then brings dozens of frames, decoded, claimed and answered as one batch (one
read, one write, far fewer task switches); frame by frame, the scheduler's and the
libraries' cost per read and per write outweighed the worker's own work per task."""

READ_PAUSE_LIMIT: Final = 0.005
"""The most the pause may last, in seconds: under heavy load (long scheduler passes) a
frame that arrived meanwhile (a cancellation, a pong) waits at most this long, plus
one pass."""

PAUSE_PROBE_READS: Final = 8
"""A read that brought several frames is followed by the pause (they come faster than
they are handled); so is every 8th read since the last pause, since a burst read frame
by frame (each read bringing the one frame sent since the last) looks like lone frames
until one pause lets them gather."""

IDLE_PASS: Final = 0.00005
"""A scheduler pass shorter than this (seconds) ran little besides the reader: the
worker has nothing left to do, so the reader reads at once. An empty pass takes
about 12 µs here (28 µs at the 99th percentile); one that runs a task's step, 60 µs
and more."""


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
    """The HTTP proxy to dial through (``ozw.link.proxy.choose_proxy``), None to dial directly."""
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
        except Exception as exc:  # an ExceptionGroup from the session's nursery too
            # Whatever breaks a connection (a proxy speaking garbage, a TLS failure, a
            # library error) must never stop the worker: log it and dial again.
            leaf = _first_leaf(exc)
            if not isinstance(leaf, _CONNECTION_ERRORS):
                log.error(
                    "unexpected %s on the connection: %s",
                    type(leaf).__name__,
                    describe_error(leaf),
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            return _why_lost(leaf, self.settings.dead_after)

    async def _serve(self, ws: ClientWebSocket) -> None:
        silence = trio.CancelScope()
        watchdog = _SilenceWatchdog(self.settings.dead_after)
        heard = watchdog.heard
        with silence:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watchdog.watch, silence)
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

    async def _read(self, ws: ClientWebSocket, heard: Callable[[], None]) -> None:
        reads = 0
        while True:
            # Every frame one read brought: under load dozens, handled without a switch.
            frames = await ws.receive()
            heard()
            frame_lines = log.isEnabledFor(logging.DEBUG)
            for frame in frames:
                try:
                    message = decode_server_message(frame)
                except ProtocolError as exc:
                    log.warning("skipped a malformed message: %s", exc)
                    continue
                if frame_lines:
                    _log_frame("in", message)
                self.on_message(message)
            reads += 1
            if pauses_after(len(frames), reads):
                reads = 0
                await pause_for_others(READ_PAUSE_PASSES, READ_PAUSE_LIMIT, IDLE_PASS)

    async def _write(self, ws: ClientWebSocket, written: WriteProgress) -> None:
        cursor = written.seq + 1
        while True:
            await self.outbox.wait_from(cursor)
            # One pass of the scheduler first: what the tasks woken with us queue (a
            # claimed task's result, the next claims) goes out in the same write.
            await trio.lowlevel.checkpoint()
            entries = await self.outbox.wait_from(cursor)
            if log.isEnabledFor(logging.DEBUG):
                for entry in entries:
                    _log_frame("out", entry.message)
            await ws.send_messages([encode_message(entry.message) for entry in entries])
            cursor = entries[-1].seq + 1
            written.advance(cursor - 1)

    async def _confirm(
        self, ws: ClientWebSocket, heard: Callable[[], None], written: WriteProgress
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

    async def _heartbeat(self, ws: ClientWebSocket, heard: Callable[[], None]) -> None:
        while True:
            await trio.sleep(self.settings.ping_interval)
            await ws.ping()
            heard()


def pauses_after(frames: int, reads: int) -> bool:
    """Whether the reader pauses after a read that brought ``frames`` messages and is
    the ``reads``-th since its last pause (see :data:`PAUSE_PROBE_READS`)."""
    return frames > 1 or reads >= PAUSE_PROBE_READS


async def pause_for_others(passes: int, limit: float, idle: float) -> None:
    """Let the rest of the worker run first: up to ``passes`` scheduler passes, at most
    ``limit`` seconds, and no further than two passes in a row shorter than ``idle``
    seconds (nothing else is left to run; one short pass may be a task's small step).
    The work a read started goes first, and what arrives meanwhile is read together."""
    began = last = trio.current_time()
    quiet = 0
    for _ in range(passes):
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        quiet = quiet + 1 if now - last < idle else 0
        if quiet == 2 or now - began >= limit:
            return
        last = now


class _SilenceWatchdog:
    """Cancels the session once nothing was heard for ``dead_after`` seconds.

    Noting the time of each read is far cheaper than moving a cancel deadline on
    every read (Trio re-sorts its deadlines each time); the watchdog wakes once per
    silence period and only then compares."""

    def __init__(self, dead_after: float) -> None:
        self.dead_after = dead_after
        self.heard_at = trio.current_time()

    def heard(self) -> None:
        self.heard_at = trio.current_time()

    async def watch(self, session: trio.CancelScope) -> None:
        while True:
            due = self.heard_at + self.dead_after
            if due <= trio.current_time():
                session.cancel()
                return
            await trio.sleep_until(due)


def _log_frame(direction: str, message: ServerMessage | WorkerMessage) -> None:
    """A debug line for a frame, by type and task (never its contents: they hold
    secrets); the caller checks the level once per batch of frames."""
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


def _first_leaf(exc: BaseException) -> BaseException:
    """The leaf that best explains ``exc``: a surprise before a plain connection error."""
    found = list(leaves(exc))
    surprises = [leaf for leaf in found if not isinstance(leaf, _CONNECTION_ERRORS)]
    return (surprises or found)[0]


@attrs.frozen
class Lost:
    """Why a connection ended or could not be made: a metric label and one line."""

    kind: str
    """refused, dial_failed, closed, silent or error."""
    text: str


def _why_lost(exc: BaseException, dead_after: float) -> Lost:
    match exc:
        case ConnectionRejected() if exc.status_code in (401, 403):
            return Lost("refused", f"API key rejected: check WARP_API_KEY (HTTP {exc.status_code})")
        case ConnectionRejected():
            return Lost("refused", f"server refused the connection (HTTP {exc.status_code})")
        case ConnectionClosed():
            return Lost("closed", f"connection closed by the server ({exc.reason})")
        case _SilentServer():
            return Lost("silent", f"no word from the server for {dead_after:g}s")
        case OSError() | HandshakeError():
            return Lost("dial_failed", f"cannot connect: {describe_error(exc)}")
    return Lost("error", f"connection failed: {type(exc).__name__}: {describe_error(exc)}")
