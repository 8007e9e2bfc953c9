"""Open the WebSocket to the dispatch server: directly, or through an HTTP proxy.

trio-websocket dials only directly, so through a proxy this module opens the tunnel
itself (``CONNECT host:port``, parsed with h11), adds TLS to the server inside it for
``wss://``, and hands the stream to trio-websocket's ``wrap_client_stream``.
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import h11
import trio
import trio_websocket as tws

from ozw.proxy import Proxy

MAX_PROXY_REPLY = 64 * 1024
"""A proxy's answer to CONNECT is a status line and a few headers; more is not a proxy."""


class ProxyRefused(ConnectionError):
    """The proxy answered CONNECT with something other than 2xx (407, 403, 502, ...)."""

    def __init__(self, proxy: Proxy, target: str, status: int, reason: str) -> None:
        # tinyproxy answers wrong credentials with 401, missing ones with 407.
        hint = f"; check the credentials in {proxy.source}" if status in (401, 407) else ""
        super().__init__(f"proxy {proxy} refused CONNECT {target}: HTTP {status} {reason}{hint}")
        self.status = status


@attrs.frozen
class Target:
    """Where a ``ws://`` / ``wss://`` URL points."""

    host: str
    port: int
    resource: str
    secure: bool

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "wss"
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.hostname or "", parts.port or (443 if secure else 80), resource, secure)

    @property
    def authority(self) -> str:
        """``host:port`` as CONNECT and Host headers write it (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def host_header(self) -> str:
        default = 443 if self.secure else 80
        return self.authority if self.port != default else self.authority.rpartition(":")[0]


async def open_tunnel(proxy: Proxy, target: Target) -> trio.SocketStream:
    """A TCP stream to ``target`` through ``proxy`` (HTTP CONNECT); ConnectionError if not."""
    try:
        stream = await trio.open_tcp_stream(proxy.host, proxy.port)
    except OSError as exc:
        raise ConnectionError(f"cannot reach proxy {proxy} ({proxy.source}): {exc}") from exc
    try:
        await _connect(stream, proxy, target)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def _connect(stream: trio.SocketStream, proxy: Proxy, target: Target) -> None:
    http = h11.Connection(h11.CLIENT)
    headers = [("Host", target.authority)]
    credentials = proxy.authorization()
    if credentials is not None:
        headers.append(("Proxy-Authorization", credentials))
    request = h11.Request(method="CONNECT", target=target.authority, headers=headers)
    await stream.send_all(http.send(request) or b"")
    received = 0
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(16384)
            received += len(data)
            if not data or received > MAX_PROXY_REPLY:
                raise ConnectionError(f"proxy {proxy} gave no valid answer to CONNECT")
            http.receive_data(data)
        elif isinstance(event, h11.InformationalResponse):
            continue
        elif isinstance(event, h11.Response):
            if not 200 <= event.status_code < 300:
                reason = event.reason.decode("latin-1")
                raise ProxyRefused(proxy, target.authority, event.status_code, reason)
            if http.trailing_data[0]:
                # WebSocket and TLS clients speak first: bytes here mean a confused proxy.
                raise ConnectionError(f"proxy {proxy} sent data before the tunnel was used")
            return


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    proxy: Proxy | None,
    ssl_context: ssl.SSLContext | None,
    extra_headers: list[tuple[bytes, bytes]],
    connect_timeout: float,
    disconnect_timeout: float,
    message_queue_size: int,
    max_message_size: int,
) -> AsyncIterator[tws.WebSocketConnection]:
    """``trio_websocket.open_websocket_url``, through ``proxy`` when there is one.

    Raises what trio-websocket raises (HandshakeError and its subclasses, OSError) and
    ConnectionError (ProxyRefused among them) for a proxy that will not tunnel.
    """
    if proxy is None:
        async with tws.open_websocket_url(
            url,
            ssl_context if url.startswith("wss:") else None,
            extra_headers=extra_headers,
            connect_timeout=connect_timeout,
            disconnect_timeout=disconnect_timeout,
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
        ) as ws:
            yield ws
        return
    target = Target.from_url(url)
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(connect_timeout):
                ws = await _handshake_through(
                    nursery,
                    proxy,
                    target,
                    ssl_context,
                    extra_headers,
                    message_queue_size,
                    max_message_size,
                )
        except trio.TooSlowError:
            raise tws.ConnectionTimeout from None
        try:
            yield ws
        finally:
            # Bounded and shielded: a dead peer cannot hold the worker, a cancel cannot skip it.
            with trio.move_on_after(disconnect_timeout, shield=True):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def _handshake_through(
    nursery: trio.Nursery,
    proxy: Proxy,
    target: Target,
    ssl_context: ssl.SSLContext | None,
    extra_headers: list[tuple[bytes, bytes]],
    message_queue_size: int,
    max_message_size: int,
) -> tws.WebSocketConnection:
    tunnel = await open_tunnel(proxy, target)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tunnel
    try:
        if target.secure:
            stream = trio.SSLStream(
                tunnel,
                ssl_context or ssl.create_default_context(),
                server_hostname=target.host,
                https_compatible=True,
            )
            await stream.do_handshake()
        return await tws.wrap_client_stream(
            nursery,
            stream,
            target.host_header,
            target.resource,
            extra_headers=extra_headers,
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
        )
    except BaseException:
        # A failed TLS or WebSocket handshake (or a cancel) must not leak the tunnel.
        await trio.aclose_forcefully(stream)
        raise


def describe_error(exc: BaseException) -> str:
    """One line: ``exc`` and what caused it (``HandshakeError`` alone says nothing)."""
    texts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(texts) < 5:
        lines = str(current).splitlines()
        text = lines[0] if lines else ""
        if text and text not in texts:
            texts.append(text)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return ": ".join(texts) or type(exc).__name__
