"""The worker's client WebSocket against a real trio-websocket server on 127.0.0.1."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio_websocket as tws
import wsproto
from wsproto.events import AcceptConnection, CloseConnection, Ping, Pong, Request, TextMessage

from ozw.link.websocket import ClientWebSocket, ConnectionClosed, ConnectionRejected, handshake

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


async def dial(port: int, *, max_message_size: int = 1 << 20) -> ClientWebSocket:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    return await handshake(
        stream,
        f"127.0.0.1:{port}",
        "/ws?worker_id=w1",
        extra_headers=[(b"Authorization", b"Bearer k")],
        max_message_size=max_message_size,
    )


async def test_handshake_headers_and_messages_both_ways_in_batches() -> None:
    seen: dict[str, object] = {}
    sent = trio.Event()

    async def handler(request: tws.WebSocketRequest) -> None:
        seen["path"] = request.path
        seen["auth"] = dict(request.headers).get(b"authorization")
        ws = await request.accept()
        for n in range(3):
            await ws.send_message(f"to worker {n}")
        sent.set()
        seen["got"] = [await ws.get_message() for _ in range(3)]
        await ws.send_message("done")

    async with serving(handler) as port:
        ws = await dial(port)
        await sent.wait()
        # Everything already received comes in one call.
        assert await ws.receive() == ["to worker 0", "to worker 1", "to worker 2"]
        await ws.send_messages(["a", "b", "c"])
        assert await ws.receive() == ["done"]
        await ws.aclose()
    assert seen == {
        "path": "/ws?worker_id=w1",
        "auth": b"Bearer k",
        "got": ["a", "b", "c"],
    }


async def test_a_refused_handshake_carries_its_status() -> None:
    async def handler(request: tws.WebSocketRequest) -> None:
        await request.reject(401, body=b"unauthorized")

    async with serving(handler) as port:
        with pytest.raises(ConnectionRejected) as caught:
            await dial(port)
    assert caught.value.status_code == 401
    assert caught.value.body == b"unauthorized"


async def test_pings_both_ways_are_answered_while_reading() -> None:
    server_ping_answered = trio.Event()

    async def handler(request: tws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.ping(b"from server")  # returns once the worker's pong arrived
        server_ping_answered.set()
        await ws.get_message()

    async with serving(handler) as port:
        ws = await dial(port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.receive)  # the reader sees pongs and answers pings
            with trio.fail_after(10):
                await ws.ping()
                await ws.ping()
                await server_ping_answered.wait()
            nursery.cancel_scope.cancel()
        await ws.aclose()


async def test_a_server_close_ends_reading_after_the_messages_before_it() -> None:
    async def handler(request: tws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("last words")
        await ws.aclose(code=4000, reason="going away for a test")

    async with serving(handler) as port:
        ws = await dial(port)
        messages = await ws.receive()
        with pytest.raises(ConnectionClosed) as caught:
            await ws.receive()
        await ws.aclose()
    assert messages == ["last words"]
    assert caught.value.reason.code == 4000
    assert str(caught.value) == "code 4000 (unknown): going away for a test"


async def test_our_close_is_a_close_handshake_the_server_sees() -> None:
    closed: list[tws.CloseReason | None] = []
    seen_close = trio.Event()

    async def handler(request: tws.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except tws.ConnectionClosed as exc:
            closed.append(exc.reason)
            seen_close.set()

    async with serving(handler) as port:
        ws = await dial(port)
        with trio.fail_after(10):
            await ws.aclose(code=1000, reason="worker shutting down")
        with trio.fail_after(10):
            await seen_close.wait()
    assert closed[0] is not None
    assert (closed[0].code, closed[0].reason) == (1000, "worker shutting down")
    with pytest.raises(ConnectionClosed):
        await ws.send_messages(["too late"])


async def test_a_message_over_the_limit_closes_with_1009() -> None:
    closed: list[tws.CloseReason | None] = []
    seen_close = trio.Event()

    async def handler(request: tws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("x" * 5000)
        try:
            await ws.get_message()
        except tws.ConnectionClosed as exc:
            closed.append(exc.reason)
            seen_close.set()

    async with serving(handler) as port:
        ws = await dial(port, max_message_size=1000)
        with pytest.raises(ConnectionClosed) as caught:
            await ws.receive()
        await ws.aclose()
        with trio.fail_after(10):
            await seen_close.wait()
    assert caught.value.reason.code == 1009
    assert closed[0] is not None
    assert closed[0].code == 1009


async def test_a_dropped_connection_is_closed_with_1006() -> None:
    async def accept_then_drop(stream: trio.SocketStream) -> None:
        server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        while True:
            server.receive_data(await stream.receive_some(4096))
            for event in server.events():
                if isinstance(event, Request):
                    await stream.send_all(server.send(AcceptConnection()))
                    await stream.aclose()  # TCP gone, no close frame
                    return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, accept_then_drop, 0, host="127.0.0.1")
        )
        ws = await dial(listeners[0].socket.getsockname()[1])
        with pytest.raises(ConnectionClosed) as caught:
            await ws.receive()
        await ws.aclose()
        nursery.cancel_scope.cancel()
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

    async with serving(handler) as port:
        ws = await dial(port)
        await ws.send_messages(sent)
        echoed: list[str | bytes] = []
        with trio.fail_after(20):
            while len(echoed) < len(sizes):
                echoed += await ws.receive()
        await ws.aclose()
    assert got == sent
    assert echoed == sent


@pytest.mark.parametrize("write_size", [7, 1 << 20], ids=["dribbled", "with-the-handshake"])
async def test_frames_split_anywhere_fragments_pings_and_bad_utf8(write_size: int) -> None:
    """Raw frames a few bytes a write, or all in the handshake's write: whole text
    frames, a fragmented message, a ping between its fragments, then invalid UTF-8
    (the worker closes with 1007)."""
    pong_seen = trio.Event()
    close_seen: list[int] = []

    async def raw_server(stream: trio.SocketStream) -> None:
        server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        while True:
            server.receive_data(await stream.receive_some(4096))
            if any(isinstance(event, Request) for event in server.events()):
                break
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
        while not close_seen:
            data = await stream.receive_some(4096)
            if not data:
                return
            server.receive_data(data)
            for event in server.events():
                if isinstance(event, Pong):
                    pong_seen.set()
                elif isinstance(event, CloseConnection):
                    close_seen.append(event.code)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, raw_server, 0, host="127.0.0.1")
        )
        ws = await dial(listeners[0].socket.getsockname()[1])
        messages: list[str | bytes] = []
        with trio.fail_after(20), pytest.raises(ConnectionClosed) as caught:
            await read_until_closed(ws, messages)
        with trio.fail_after(20):
            await ws.aclose()
            await pong_seen.wait()
        nursery.cancel_scope.cancel()
    assert messages == ["first", "x" * 300, "fragment", "last"]
    assert caught.value.reason.code == 1007


async def read_until_closed(ws: ClientWebSocket, messages: list[str | bytes]) -> None:
    while True:
        messages += await ws.receive()
