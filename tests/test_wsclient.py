"""The worker's client WebSocket (trio-websocket over dial.py's stream) against real
servers on 127.0.0.1: a trio-websocket server, or raw TCP peers speaking bytes."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio
import trio_websocket as tws
import wsproto
from wsproto.events import AcceptConnection, Ping, Pong, Request, TextMessage

from ozw.link.dial import open_websocket
from ozw.link.websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    close_text,
)

Handler = Callable[[tws.WebSocketRequest], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    """A trio-websocket server running ``handler``; yields its port."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: tws.serve_websocket(
                handler, "127.0.0.1", 0, ssl_context=None, task_status=task_status
            )
        )
        yield server.port
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_serving(peer: Callable[[trio.SocketStream], Awaitable[None]]) -> AsyncIterator[int]:
    """A TCP server running ``peer`` on each connection; yields its port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, peer, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def dial(
    port: int, *, max_message_size: int = 1 << 20, connect_timeout: float = 10
) -> AbstractAsyncContextManager[WebSocketConnection]:
    return open_websocket(
        f"ws://127.0.0.1:{port}/ws?worker_id=w1",
        proxy=None,
        ssl_context=None,
        extra_headers=[(b"Authorization", b"Bearer k")],
        connect_timeout=connect_timeout,
        disconnect_timeout=5,
        max_message_size=max_message_size,
    )


async def accept_raw(stream: trio.SocketStream) -> wsproto.WSConnection:
    """Read the worker's handshake on ``stream`` and accept it."""
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        server.receive_data(await stream.receive_some(4096))
        if any(isinstance(event, Request) for event in server.events()):
            return server


async def test_handshake_headers_and_messages_both_ways() -> None:
    seen: dict[str, object] = {}

    async def handler(request: tws.WebSocketRequest) -> None:
        seen["path"] = request.path
        seen["auth"] = dict(request.headers).get(b"authorization")
        ws = await request.accept()
        for n in range(3):
            await ws.send_message(f"to worker {n}")
        seen["got"] = [await ws.get_message() for _ in range(3)]
        await ws.send_message("done")

    async with serving(handler) as port, dial(port) as ws:
        assert [await ws.get_message() for _ in range(3)] == [f"to worker {n}" for n in range(3)]
        for message in ["a", "b", "c"]:
            await ws.send_message(message)
        assert await ws.get_message() == "done"
    assert seen == {"path": "/ws?worker_id=w1", "auth": b"Bearer k", "got": ["a", "b", "c"]}


async def test_a_refused_handshake_is_one_error_with_its_status() -> None:
    async def handler(request: tws.WebSocketRequest) -> None:
        await request.reject(401, body=b"unauthorized")

    async with serving(handler) as port:
        with pytest.raises(ConnectionRejected) as caught:
            async with dial(port):
                pass
    assert caught.value.status_code == 401
    assert caught.value.body == b"unauthorized"


async def test_pings_both_ways_are_answered() -> None:
    server_ping_answered = trio.Event()

    async def handler(request: tws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.ping(b"from server")  # returns once the worker's pong arrived
        server_ping_answered.set()
        await ws.get_message()

    async with serving(handler) as port, dial(port) as ws:
        with trio.fail_after(10):
            await ws.ping()
            await ws.ping()
            await server_ping_answered.wait()


async def test_a_server_close_ends_reading_after_the_messages_before_it() -> None:
    async def handler(request: tws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("last words")
        await ws.aclose(code=4000, reason="going away for a test")

    async with serving(handler) as port, dial(port) as ws:
        message = await ws.get_message()
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
    assert message == "last words"
    assert close_text(caught.value.reason) == "code 4000 (private reserved): going away for a test"


class ClosingServer:
    """A trio-websocket server handler that sends ``first`` (if any), then reads until
    the client closes, and records why."""

    def __init__(self, first: str | None = None) -> None:
        self.first = first
        self.closed = trio.Event()
        self.reason: tws.CloseReason | None = None

    async def handler(self, request: tws.WebSocketRequest) -> None:
        ws = await request.accept()
        if self.first is not None:
            await ws.send_message(self.first)
        try:
            await ws.get_message()
        except tws.ConnectionClosed as exc:
            self.reason = exc.reason
            self.closed.set()

    async def close_reason(self) -> tws.CloseReason:
        with trio.fail_after(10):
            await self.closed.wait()
        assert self.reason is not None
        return self.reason


async def test_our_close_is_a_close_handshake_the_server_sees() -> None:
    server = ClosingServer()
    async with serving(server.handler) as port:
        async with dial(port) as ws:
            with trio.fail_after(10):
                await ws.aclose(code=1000, reason="worker shutting down")
        reason = await server.close_reason()
    assert (reason.code, reason.reason) == (1000, "worker shutting down")
    with pytest.raises(ConnectionClosed):
        await ws.send_message("too late")


async def test_a_message_over_the_limit_closes_with_1009() -> None:
    server = ClosingServer(first="x" * 5000)
    async with serving(server.handler) as port:
        async with dial(port, max_message_size=1000) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                await ws.get_message()
        reason = await server.close_reason()
    assert caught.value.reason is not None
    assert caught.value.reason.code == 1009
    assert reason.code == 1009


async def test_a_dropped_connection_is_closed_with_1006() -> None:
    async def accept_then_drop(stream: trio.SocketStream) -> None:
        server = await accept_raw(stream)
        await stream.send_all(server.send(AcceptConnection()))
        await stream.aclose()  # TCP gone, no close frame

    async with raw_serving(accept_then_drop) as port, dial(port) as ws:
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
    assert caught.value.reason is not None
    assert caught.value.reason.code == 1006


async def test_frames_of_every_length_both_ways() -> None:
    sizes = [0, 1, 125, 126, 65535, 65536, 70001]
    sent = [("é" * size)[:size] for size in sizes]  # two bytes a character in UTF-8
    got: list[str | bytes] = []

    async def handler(request: tws.WebSocketRequest) -> None:
        ws = await request.accept()
        for _ in sizes:
            got.append(await ws.get_message())
        for message in got:
            await ws.send_message(message)

    async with serving(handler) as port, dial(port) as ws:
        for message in sent:
            await ws.send_message(message)
        with trio.fail_after(20):
            echoed = [await ws.get_message() for _ in sizes]
    assert got == sent
    assert echoed == sent


@pytest.mark.parametrize("write_size", [7, 1 << 20], ids=["dribbled", "with-the-handshake"])
async def test_frames_split_anywhere_fragments_pings_and_bad_utf8(write_size: int) -> None:
    """Raw frames a few bytes a write, or all in the handshake's write: whole text
    frames, a fragmented message, a ping between its fragments, then invalid UTF-8
    (the worker's side closes with 1007 and drops the connection)."""
    pong_seen, dropped = trio.Event(), trio.Event()

    async def raw_server(stream: trio.SocketStream) -> None:
        server = await accept_raw(stream)
        frames = server.send(AcceptConnection())
        frames += server.send(TextMessage(data="first"))
        frames += server.send(TextMessage(data="x" * 300))
        frames += server.send(TextMessage(data="frag", message_finished=False))
        frames += server.send(Ping(payload=b"p"))
        frames += server.send(TextMessage(data="ment", message_finished=True))
        frames += server.send(TextMessage(data="last"))
        frames += b"\x81\x02\xff\xfe"  # a text frame that is not UTF-8
        for at in range(0, len(frames), write_size):
            await stream.send_all(frames[at : at + write_size])
        while data := await stream.receive_some(4096):
            server.receive_data(data)
            if any(isinstance(event, Pong) for event in server.events()):
                pong_seen.set()
        dropped.set()

    messages: list[str | bytes] = []
    async with raw_serving(raw_server) as port:
        async with dial(port) as ws:
            with trio.fail_after(20), pytest.raises(ConnectionClosed) as caught:
                await read_until_closed(ws, messages)
        with trio.fail_after(20):
            await pong_seen.wait()
            await dropped.wait()
    assert messages == ["first", "x" * 300, "fragment", "last"]
    assert caught.value.reason is not None
    assert caught.value.reason.code == 1007


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"", "the server closed the connection during the handshake"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: bogus\r\n\r\n",
            "invalid answer to the WebSocket handshake: Bad accept token",
        ),
        (
            b"\x00\xff not http at all\r\n\r\n",
            "invalid answer to the WebSocket handshake: Bad HTTP message",
        ),
    ],
    ids=["closed", "bad-accept", "not-http"],
)
async def test_a_handshake_answered_wrongly_fails_at_once_in_words(
    answer: bytes, expected: str
) -> None:
    async def answer_and_close(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some()
            await stream.send_all(answer)

    async with raw_serving(answer_and_close) as port:
        with trio.fail_after(5), pytest.raises(HandshakeError) as caught:
            async with dial(port, connect_timeout=60):
                pass
    assert type(caught.value) is HandshakeError
    assert str(caught.value) == expected


async def test_a_silent_server_is_a_connection_timeout() -> None:
    async def hold(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with raw_serving(hold) as port:
        with pytest.raises(ConnectionTimeout):
            async with dial(port, connect_timeout=0.2):
                pass


async def read_until_closed(ws: WebSocketConnection, messages: list[str | bytes]) -> None:
    while True:
        messages.append(await ws.get_message())
