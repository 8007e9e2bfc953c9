"""The worker's client WebSocket: wsproto over the stream dial.py opened, in batches.

Not trio-websocket's connection: it hands every message through a channel from its
own reader task and writes every frame with its own ``send_all``, which costs more
than the worker's work per task at thousands of tasks a second. Here the reader
takes every message one ``receive_some`` brought (:meth:`ClientWebSocket.receive`)
and the writer sends any number of messages in one write
(:meth:`ClientWebSocket.send_messages`). wsproto (the protocol library trio-websocket
runs on) still does the handshake and every frame; what this keeps from
trio-websocket: the handshake with extra headers, answers to the server's pings, our
pings waiting for their pong, the close handshake, the maximum message size and its
small exception tree (``HandshakeError`` → ``ConnectionRejected``,
``ConnectionTimeout``; ``ConnectionClosed(reason)``).

One task reads (receive, and aclose once reading stopped); any task may send.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
from collections.abc import Iterable

import attrs
import trio
import wsproto
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason as CloseCode
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

RECEIVE_BYTES = 64 * 1024
"""One read: dozens of assignment frames when the server sends many at once."""

MAX_REJECT_BODY = 64 * 1024
"""What of a refusal's body is kept (it is only ever shown in a log line)."""


class HandshakeError(Exception):
    """The WebSocket handshake did not complete."""


class ConnectionTimeout(HandshakeError):
    """No answer to the handshake in time (raised by dial.py's deadline)."""


class ConnectionRejected(HandshakeError):
    """The server answered the handshake with an HTTP status instead of an upgrade."""

    def __init__(self, status_code: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"the server refused the WebSocket (HTTP {status_code})")
        self.status_code = status_code
        self.headers = headers
        self.body = body


@attrs.frozen
class CloseReason:
    """A close code and the peer's reason text."""

    code: int
    reason: str | None = None

    def __str__(self) -> str:
        try:
            name = CloseCode(self.code).name.lower().replace("_", " ")
        except ValueError:
            name = "unknown"
        return f"code {self.code} ({name})" + (f": {self.reason}" if self.reason else "")


class ConnectionClosed(Exception):
    """The connection is closed (by either side, or lost: code 1006)."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(str(reason))
        self.reason = reason


_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)
"""What a stream raises once the connection under it is gone (or closed here)."""

LOST = CloseReason(CloseCode.ABNORMAL_CLOSURE, "the connection was lost")


async def handshake(
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    extra_headers: list[tuple[bytes, bytes]],
    max_message_size: int,
) -> ClientWebSocket:
    """Upgrade ``stream`` (TCP, tunnel or TLS, already open) to a WebSocket.

    Raises ConnectionRejected (an HTTP answer instead of the upgrade), HandshakeError
    (an invalid answer, or the peer closed the stream); the caller bounds the time.
    """
    protocol = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(
        protocol.send(Request(host=host, target=resource, extra_headers=extra_headers))
    )
    rejected: RejectConnection | None = None
    body = bytearray()
    tail = b""  # the end of the response head so far, where its blank line may start
    while True:
        data = await stream.receive_some(RECEIVE_BYTES)
        if not data:
            if rejected is not None:
                raise ConnectionRejected(rejected.status_code, list(rejected.headers), bytes(body))
            raise HandshakeError("the server closed the connection during the handshake")
        rest = bytes(data)
        while rest:
            # The frames after an upgrade's head go to the ClientWebSocket, not wsproto.
            chunk, rest, tail = (rest, b"", b"") if rejected else _up_to_head_end(tail, rest)
            try:
                protocol.receive_data(chunk)
            except RemoteProtocolError as exc:
                raise HandshakeError(f"invalid answer to the WebSocket handshake: {exc}") from None
            for event in protocol.events():
                match event:
                    case AcceptConnection():
                        return ClientWebSocket(stream, protocol, max_message_size, rest)
                    case RejectConnection(has_body=False):
                        raise ConnectionRejected(event.status_code, list(event.headers), b"")
                    case RejectConnection():
                        rejected = event
                    case RejectData():
                        body += event.data[: MAX_REJECT_BODY - len(body)]
                        if event.body_finished and rejected is not None:
                            raise ConnectionRejected(
                                rejected.status_code, list(rejected.headers), bytes(body)
                            )


def _up_to_head_end(tail: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """``data`` cut after the blank line that ends an HTTP head (``tail``: the last
    bytes before it): (up to the cut, after it, the new tail)."""
    end = (tail + data).find(b"\r\n\r\n")
    if end < 0:
        return data, b"", (tail + data)[-3:]
    cut = end + 4 - len(tail)
    return data[:cut], data[cut:], b""


class ClientWebSocket:
    """An open client WebSocket (see the module docstring)."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: wsproto.WSConnection,
        max_message_size: int,
        pending: bytes = b"",
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._max_message_size = max_message_size
        self._send_lock = trio.StrictFIFOLock()
        self._parts: list[str | bytes] = []
        self._size = 0
        self._pings: collections.OrderedDict[bytes, trio.Event] = collections.OrderedDict()
        self._ping_numbers = itertools.count()
        self._close_reason: CloseReason | None = None
        self._stream_closed = False
        self._pending = pending
        """The start of a frame the next read completes."""

    @property
    def closed(self) -> CloseReason | None:
        """Why the connection closed, None while it is open."""
        return self._close_reason

    async def receive(self) -> list[str | bytes]:
        """Wait for messages; returns every complete one received so far (one or more).

        Answers the server's pings and wakes :meth:`ping` callers on the way.
        Raises ConnectionClosed once the server closed (or the connection was lost).
        """
        messages: list[str | bytes] = []
        if self._pending:  # whole frames may wait there (they came with the handshake)
            pending, self._pending = self._pending, b""
            await self._take(pending, messages)
        while not messages:
            if self._close_reason is not None:
                raise ConnectionClosed(self._close_reason)
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except _GONE:
                data = b""
            if not data:
                self._closed_by(LOST)
                raise ConnectionClosed(LOST)
            await self._take(self._pending + data if self._pending else bytes(data), messages)
        return messages

    async def _take(self, data: bytes, messages: list[str | bytes]) -> None:
        """Every complete frame of ``data``; the partial one at its end waits in _pending.

        A whole, unfragmented text frame (what the server sends all day) is decoded
        here at a fraction of wsproto's cost; every other frame (control, fragment,
        binary, anything invalid) goes whole to wsproto, which then never holds a
        partial frame, so the two never disagree on where a frame starts.
        """
        at, end = 0, len(data)
        while end - at >= 2 and self._close_reason is None:
            second = data[at + 1]
            size, head = second & 0x7F, 2
            if size == 126:
                size, head = int.from_bytes(data[at + 2 : at + 4], "big"), 4
            elif size == 127:
                size, head = int.from_bytes(data[at + 2 : at + 10], "big"), 10
            head += 4 if second & 0x80 else 0  # a mask (invalid from a server: wsproto says so)
            if size > self._max_message_size:
                reason = f"message over {self._max_message_size} bytes"
                await self._close_locally(CloseReason(CloseCode.MESSAGE_TOO_BIG, reason))
                break
            stop = at + head + size
            if stop > end:
                break
            # Final text frame, unmasked, and no fragmented message under way in wsproto.
            if data[at] == 0x81 and not second & 0x80 and not self._parts:
                with contextlib.suppress(UnicodeDecodeError):  # else wsproto closes with 1007
                    messages.append(data[at + head : stop].decode())
                    at = stop
                    continue
            try:
                self._protocol.receive_data(data[at:stop])
            except LocalProtocolError:  # data after the close: nothing more to read
                self._closed_by(self._close_reason or LOST)
            await self._handle_events(messages)
            at = stop
        self._pending = data[at:] if at < end else b""

    async def _handle_events(self, messages: list[str | bytes]) -> None:
        for event in self._protocol.events():
            match event:
                case TextMessage() | BytesMessage():
                    self._size += len(event.data)
                    if self._size > self._max_message_size:
                        reason = f"message over {self._max_message_size} bytes"
                        await self._close_locally(CloseReason(CloseCode.MESSAGE_TOO_BIG, reason))
                        return
                    self._parts.append(
                        event.data if isinstance(event.data, str) else bytes(event.data)
                    )
                    if event.message_finished:
                        messages.append(_joined(self._parts))
                        self._parts, self._size = [], 0
                case Ping():
                    await self._send(event.response())
                case Pong():
                    self._answered(bytes(event.payload))
                case CloseConnection():
                    if self._protocol.state is ConnectionState.REMOTE_CLOSING:
                        await self._send(event.response())
                    self._closed_by(CloseReason(event.code, event.reason))
                    return

    async def send_messages(self, messages: Iterable[str]) -> None:
        """Send text messages in order, all in one write. Raises ConnectionClosed."""
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        payloads = [message.encode() for message in messages]
        await self._write(b"".join(masked_text_frames(payloads)))

    async def ping(self) -> None:
        """Send a ping and wait for its pong (a pong also answers every earlier ping).

        Someone must be reading (:meth:`receive`) for the pong to be seen."""
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        payload = next(self._ping_numbers).to_bytes(8, "big")
        answered = self._pings[payload] = trio.Event()
        await self._send(Ping(payload=payload))
        await answered.wait()
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)

    async def aclose(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str | None = None) -> None:
        """Close handshake (our close, the server's answer), then the stream.

        Call it once no task reads any more; the caller bounds the wait."""
        try:
            with contextlib.suppress(*_GONE, ConnectionClosed, LocalProtocolError):
                if self._close_reason is None:
                    await self._close_locally(CloseReason(code, reason))
                    if self._pending:
                        self._protocol.receive_data(self._pending)
                    # RFC 6455: the client waits for the server's close (and TCP close).
                    while self._protocol.state is not ConnectionState.CLOSED:
                        data = await self._stream.receive_some(RECEIVE_BYTES)
                        if not data:
                            break
                        self._protocol.receive_data(bytes(data))
                        for _ in self._protocol.events():  # late messages: dropped
                            pass
        finally:
            await self._close_stream()

    # --- internals ------------------------------------------------------------------

    async def _close_locally(self, reason: CloseReason) -> None:
        """Start the close handshake from our side (1000 on purpose, 1009, ...)."""
        self._closed_by(reason)
        if self._protocol.state is ConnectionState.OPEN:
            await self._send(CloseConnection(code=reason.code, reason=reason.reason))

    def _closed_by(self, reason: CloseReason) -> None:
        if self._close_reason is None:
            self._close_reason = reason
        for answered in self._pings.values():
            answered.set()
        self._pings.clear()

    def _answered(self, payload: bytes) -> None:
        if payload not in self._pings:
            return  # a pong nobody waits for (unsolicited, or after a close)
        while self._pings:
            key, answered = self._pings.popitem(last=False)
            answered.set()
            if key == payload:
                break

    async def _send(self, event: Event) -> None:
        await self._write(self._protocol.send(event))

    async def _write(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except _GONE:
                self._closed_by(LOST)
                raise ConnectionClosed(LOST) from None

    async def _close_stream(self) -> None:
        if self._stream_closed:
            return
        self._stream_closed = True
        self._closed_by(LOST)
        with contextlib.suppress(*_GONE):
            await self._stream.aclose()


def masked_text_frames(payloads: list[bytes]) -> list[bytes]:
    """Each payload as one final, masked client text frame (RFC 6455 section 5.2).

    wsproto's send path builds the same bytes at five times the cost, which at
    thousands of frames a second is a fifth of the worker's time; control frames
    (close, ping, pong) still go through wsproto. No extension is ever negotiated
    (the handshake offers none), so the RSV bits stay zero.
    """
    masks = os.urandom(4 * len(payloads))  # one read of the OS's randomness per batch
    frames: list[bytes] = []
    for index, payload in enumerate(payloads):
        size = len(payload)
        if size < 126:
            header = bytes((0x81, 0x80 | size))
        elif size < 1 << 16:
            header = b"\x81\xfe" + size.to_bytes(2, "big")
        else:
            header = b"\x81\xff" + size.to_bytes(8, "big")
        mask = masks[4 * index : 4 * index + 4]
        # XOR the whole payload at once as one big integer with the mask repeated.
        key = (mask * (size // 4 + 1))[:size]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
        frames.append(header + mask + masked)
    return frames


def _joined(parts: list[str | bytes]) -> str | bytes:
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], str):
        return "".join(part for part in parts if isinstance(part, str))
    return b"".join(part for part in parts if isinstance(part, bytes))
