"""Open the WebSocket to the dispatch server: directly, or through a proxy.

This module opens the TCP stream itself or the tunnel: ``CONNECT host:port`` to an
``http://`` proxy (parsed with h11), the same inside TLS to an ``https://`` proxy
(verified as the server is, as Go's dialer does), or a SOCKS5 handshake with
python-socks for ``socks5://`` / ``socks5h://``. Then it adds TLS to the server for
``wss://`` and does the WebSocket handshake on that stream (:mod:`ozw.link.websocket`).
"""

from __future__ import annotations

import functools
import math
import socket
import ssl
import urllib.parse
from contextlib import AbstractAsyncContextManager
from typing import TypeAlias

import attrs
import h11
import trio
from python_socks import ProxyConnectionError, ProxyError, ProxyType
from python_socks.async_.trio.v2 import Proxy as SocksProxy

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


Stream: TypeAlias = trio.abc.Stream
"""A TCP stream, or TLS over one (to an https:// proxy, to the server, or both)."""


async def open_tunnel(
    proxy: Proxy, target: Target, ssl_context: ssl.SSLContext | None = None
) -> Stream:
    """A stream to ``target`` through ``proxy``; ConnectionError if there is none.

    ``ssl_context`` verifies an ``https://`` proxy (the server's context, as Go's
    dialer uses its one TLS configuration for both).
    """
    if proxy.scheme in ("socks5", "socks5h"):
        return await _socks_tunnel(proxy, target)
    try:
        tcp = await trio.open_tcp_stream(proxy.host, proxy.port)
    except OSError as exc:
        raise ConnectionError(f"cannot reach proxy {proxy} ({proxy.source}): {exc}") from exc
    stream: Stream = tcp
    try:
        if proxy.scheme == "https":
            stream = await _tls(tcp, proxy.host, ssl_context)
        await _connect(stream, proxy, target)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def _socks_tunnel(proxy: Proxy, target: Target) -> Stream:
    """A SOCKS5 tunnel: the target's name goes to the proxy (``rdns``), as with Go."""
    socks = SocksProxy(
        ProxyType.SOCKS5, proxy.host, proxy.port, proxy.username, proxy.password, rdns=True
    )
    try:
        # The caller's deadline bounds the dial; python-socks wants one of its own too.
        tunnel = await socks.connect(target.host, target.port, timeout=math.inf)
    except ProxyConnectionError as exc:
        raise ConnectionError(f"cannot reach proxy {proxy} ({proxy.source}): {exc}") from None
    except ProxyError as exc:
        hint = f"; check the credentials in {proxy.source}" if "auth" in str(exc).lower() else ""
        raise ConnectionError(
            f"proxy {proxy} refused to connect to {target.authority}: {exc}{hint}"
        ) from None
    return tunnel.trio_stream


async def _tls(stream: Stream, host: str, ssl_context: ssl.SSLContext | None) -> Stream:
    """TLS over ``stream`` to ``host``, verified; a failed handshake closes the stream."""
    wrapped = trio.SSLStream(
        stream,
        ssl_context or ssl.create_default_context(),
        server_hostname=host,
        https_compatible=True,
    )
    try:
        await wrapped.do_handshake()
    except BaseException:
        # A failed TLS handshake (or a timeout) must not leak the socket.
        await trio.aclose_forcefully(wrapped)
        raise
    return wrapped


async def _connect(stream: Stream, proxy: Proxy, target: Target) -> None:
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
            http.receive_data(bytes(data))
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
) -> Stream:
    stream: Stream
    if proxy is None:
        try:
            stream = await trio.open_tcp_stream(target.host, target.port)
        except socket.gaierror as exc:
            # The resolver's text ("Name or service not known") never names the host.
            raise ConnectionError(f"cannot resolve {target.host}: {exc.strerror or exc}") from None
    else:
        stream = await open_tunnel(proxy, target, ssl_context)
    if not target.secure:
        return stream
    return await _tls(stream, target.host, ssl_context)


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
