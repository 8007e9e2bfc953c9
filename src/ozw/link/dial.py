"""Open the WebSocket to the dispatch server: directly, or through an HTTP proxy.

This module opens the TCP stream itself (or the tunnel: ``CONNECT host:port``,
parsed with h11), adds TLS to the server for ``wss://``, and does the WebSocket
handshake on that stream (:mod:`ozw.link.websocket`).
"""

from __future__ import annotations

import functools
import socket
import ssl
import urllib.parse
from contextlib import AbstractAsyncContextManager

import attrs
import h11
import trio

from ozw import exception_groups
from ozw.link.proxy import Proxy
from ozw.link.websocket import (
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    websocket_session,
)

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


def open_websocket(
    url: str,
    *,
    proxy: Proxy | None,
    ssl_context: ssl.SSLContext | None,
    extra_headers: list[tuple[bytes, bytes]],
    connect_timeout: float,
    disconnect_timeout: float,
    max_message_size: int,
) -> AbstractAsyncContextManager[WebSocketConnection]:
    """A client WebSocket to ``url``, through ``proxy`` when there is one.

    The whole dial (TCP, CONNECT, TLS, handshake) is bounded by ``connect_timeout``:
    a peer that accepted TCP and went silent cannot hold it.

    Raises OSError (ConnectionError, ProxyRefused among them, for a proxy that will
    not tunnel), ``trio.BrokenResourceError`` (TLS), HandshakeError and its
    subclasses ConnectionRejected and ConnectionTimeout (:mod:`ozw.link.websocket`).
    """
    target = Target.from_url(url)
    return websocket_session(
        functools.partial(_open_stream, proxy, target, ssl_context),
        target.host_header,
        target.resource,
        extra_headers=extra_headers,
        connect_timeout=connect_timeout,
        disconnect_timeout=disconnect_timeout,
        max_message_size=max_message_size,
    )


async def _open_stream(
    proxy: Proxy | None, target: Target, ssl_context: ssl.SSLContext | None
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    if proxy is None:
        try:
            tcp = await trio.open_tcp_stream(target.host, target.port)
        except socket.gaierror as exc:
            # The resolver's text ("Name or service not known") never names the host.
            raise ConnectionError(f"cannot resolve {target.host}: {exc.strerror or exc}") from None
    else:
        tcp = await open_tunnel(proxy, target)
    if not target.secure:
        return tcp
    stream = trio.SSLStream(
        tcp,
        ssl_context or ssl.create_default_context(),
        server_hostname=target.host,
        https_compatible=True,
    )
    try:
        await stream.do_handshake()
    except BaseException:
        # A failed TLS handshake (or a timeout) must not leak the socket.
        await trio.aclose_forcefully(stream)
        raise
    return stream


_SILENT_ERRORS: dict[type[BaseException], str] = {
    ConnectionTimeout: "no answer to the WebSocket handshake in time",
    HandshakeError: "the WebSocket handshake failed",
}
"""What the message-less handshake exceptions mean."""


def describe_error(exc: BaseException) -> str:
    """One line: ``exc`` and what caused it (``HandshakeError`` alone says nothing)."""
    texts: list[str] = []
    current: BaseException | None = exc
    for _depth in range(8):  # bounded: a cause chain may be long
        if current is None:
            break
        # A group (trio.open_tcp_stream's cause, one error per address) says only
        # how many it holds: its cause speaks for it.
        current = exception_groups.cause(current)
        cause = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        lines = str(current).splitlines()
        # A message-less wrapper says nothing its cause does not say better.
        text = lines[0] if lines else "" if cause else _SILENT_ERRORS.get(type(current), "")
        if text and not any(text in earlier for earlier in texts):
            texts.append(text)
        current = cause
    return ": ".join(texts) or type(exc).__name__
