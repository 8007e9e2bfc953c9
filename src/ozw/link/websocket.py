"""The worker's client WebSocket: trio-websocket over the stream dial.py opened.

trio-websocket (on wsproto) does the handshake and every frame. What is ours is glue:
the dial and handshake bounded by ``connect_timeout``, one exception out of the
session's nursery (never a group), the close bounded by ``disconnect_timeout``, and
two handshake failures said in words that trio-websocket leaves vague (the server
closed the stream: it would wait for the timeout; an answer that is not HTTP or not
an upgrade: it fails with a LocalProtocolError of its own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import h11
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ozw.exception_groups import collapsed

__all__ = [
    "CloseReason",
    "ConnectionClosed",
    "ConnectionRejected",
    "ConnectionTimeout",
    "HandshakeError",
    "WebSocketConnection",
    "close_text",
    "websocket_session",
]

RECEIVE_BYTES = 64 * 1024
"""One read: an assignment carries a whole task definition (trio-websocket reads 4 KiB)."""


@asynccontextmanager
async def websocket_session(
    open_stream: Callable[[], Awaitable[trio.abc.Stream]],
    host: str,
    resource: str,
    *,
    extra_headers: list[tuple[bytes, bytes]],
    connect_timeout: float,
    disconnect_timeout: float,
    max_message_size: int,
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket on the stream ``open_stream`` opens, closed on the way out.

    Raises what ``open_stream`` raises, ConnectionTimeout, ConnectionRejected,
    HandshakeError; in the block, ConnectionClosed once the connection is gone.
    """
    opened = False
    try:
        with collapsed():
            async with trio.open_nursery() as nursery:  # trio-websocket's reader runs here
                deadline = trio.current_time() + connect_timeout
                try:
                    with trio.fail_at(deadline):
                        stream = await open_stream()
                except trio.TooSlowError:
                    raise ConnectionTimeout from None
                try:
                    with trio.move_on_at(deadline) as handshake:
                        ws = await wrap_client_stream(
                            nursery,
                            _EndIsAnError(stream),  # type: ignore[arg-type]
                            host,
                            resource,
                            extra_headers=extra_headers,
                            max_message_size=max_message_size,
                            receive_buffer_size=RECEIVE_BYTES,
                        )
                    if handshake.cancelled_caught:
                        raise ConnectionTimeout
                    opened = True
                    try:
                        yield ws
                    finally:
                        # Bounded and shielded: a dead peer cannot hold us, a cancel
                        # cannot skip it.
                        with trio.move_on_after(disconnect_timeout, shield=True):
                            await ws.aclose()
                finally:
                    # trio-websocket leaves the stream open after a close it started
                    # itself (1009, a protocol error) or a failed handshake.
                    await trio.aclose_forcefully(stream)
                    nursery.cancel_scope.cancel()
    except (LocalProtocolError, h11.LocalProtocolError) as exc:
        if opened:
            raise
        # trio-websocket answers an invalid handshake reply with a rejection a client
        # cannot send (wsproto or h11 refuses it), while handling the reply's problem.
        problem: BaseException | None = exc
        while problem is not None and not isinstance(problem, RemoteProtocolError):
            problem = problem.__context__
        raise HandshakeError(f"invalid answer to the WebSocket handshake: {problem}") from None


class _EndIsAnError(trio.abc.Stream):
    """The dialled stream, where an end of stream before the first byte of an answer
    is a HandshakeError: trio-websocket would wait for the handshake until the deadline."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._answered = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._stream.receive_some(max_bytes)
        if not data and not self._answered:
            raise HandshakeError("the server closed the connection during the handshake")
        self._answered = True
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


def close_text(reason: CloseReason | None) -> str:
    """A close code in words: ``code 4000 (private reserved): going away``."""
    if reason is None:  # trio-websocket closed on a protocol error
        return "closed after an invalid frame"
    name = reason.name.lower().replace("_", " ")
    return f"code {reason.code} ({name})" + (f": {reason.reason}" if reason.reason else "")
