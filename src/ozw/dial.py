"""Open the WebSocket to the dispatch server: directly, or through an HTTP proxy.

trio-websocket dials only directly, so this module opens the TCP stream itself (or
the tunnel: ``CONNECT host:port``, parsed with h11), adds TLS to the server for
``wss://``, and hands the stream to trio-websocket's ``wrap_client_stream``.
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import attrs
import h11
import trio
import trio_websocket as tws

from ozw.exit_status import leaves
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
    """A client WebSocket to ``url``, through ``proxy`` when there is one.

    Not ``trio_websocket.open_websocket_url``: after a handshake timeout it waits for
    its reader task, which a peer that accepted TCP and went silent never ends. Here
    the whole dial (TCP, CONNECT, TLS, handshake) is bounded by ``connect_timeout``.

    Raises OSError (ConnectionError, ProxyRefused among them, for a proxy that will
    not tunnel), ``trio.BrokenResourceError`` (TLS), trio-websocket's HandshakeError
    subclasses (ConnectionRejected, ConnectionTimeout); in an exception group when
    they come from the connection's reader task.
    """
    target = Target.from_url(url)
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(connect_timeout):
                    ws = await _handshake(
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
                # Bounded and shielded: a dead peer cannot hold us, a cancel cannot skip it.
                with trio.move_on_after(disconnect_timeout, shield=True):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _raise_alone(_what_matters(group))


def _what_matters(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """An outside cancel wins (the dial's errors no longer matter); one error comes alone."""
    cancelled, errors = group.split(trio.Cancelled)
    if cancelled is not None or errors is None:
        return cancelled or group
    found = list(leaves(errors))
    return found[0] if len(found) == 1 else errors


def _raise_alone(exc: BaseException) -> NoReturn:
    """Raise ``exc`` keeping its own context (not the group it was taken from)."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context


async def _handshake(
    nursery: trio.Nursery,
    proxy: Proxy | None,
    target: Target,
    ssl_context: ssl.SSLContext | None,
    extra_headers: list[tuple[bytes, bytes]],
    message_queue_size: int,
    max_message_size: int,
) -> tws.WebSocketConnection:
    if proxy is None:
        tcp = await trio.open_tcp_stream(target.host, target.port)
    else:
        tcp = await open_tunnel(proxy, target)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
    try:
        if target.secure:
            stream = trio.SSLStream(
                tcp,
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
        # A failed TLS or WebSocket handshake (or a timeout) must not leak the socket,
        # and closing it is what ends the reader task of a silent peer.
        await trio.aclose_forcefully(stream)
        raise


_SILENT_ERRORS: dict[type[BaseException], str] = {
    tws.ConnectionTimeout: "no answer to the WebSocket handshake in time",
    tws.DisconnectionTimeout: "no answer to the closing handshake in time",
    tws.HandshakeError: "the WebSocket handshake failed",
}
"""What the message-less exceptions of trio-websocket mean."""


def describe_error(exc: BaseException) -> str:
    """One line: ``exc`` and what caused it (``HandshakeError`` alone says nothing)."""
    texts: list[str] = []
    current: BaseException | None = exc
    for _depth in range(8):  # bounded: a context chain can loop through a group
        if current is None:
            break
        if isinstance(current, BaseExceptionGroup):
            current = current.exceptions[0]  # the group's own text only counts them
            continue
        cause = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        lines = str(current).splitlines()
        # A message-less wrapper says nothing its cause does not say better.
        text = lines[0] if lines else "" if cause else _SILENT_ERRORS.get(type(current), "")
        if text and not any(text in earlier for earlier in texts):
            texts.append(text)
        current = cause
    return ": ".join(texts) or type(exc).__name__
