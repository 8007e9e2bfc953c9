"""https:// and SOCKS5 proxies, as the Go worker's dialer takes them, through real
servers: tinyproxy behind stunnel4 (TLS to the proxy) and Dante's danted (SOCKS5).

Each test reads the servers' own logs: stunnel forwarded the connection, tinyproxy
was asked for the tunnel, danted connected to the dispatch server.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from ozw.link.connection import Connection
from ozw.link.outbox import Outbox
from ozw.link.proxy import Proxy, choose_proxy
from ozw.wire.codec import TaskCompleted
from tests.support.proxy_servers import running_dante, running_microsocks, running_stunnel
from tests.support.scripted_backend import ScriptedBackend
from tests.support.tinyproxy import (
    Tls,
    local_address,
    local_name,
    make_tls,
    running_tinyproxy,
    start_dispatch_server,
)
from tests.support.worker import assignment, fast_settings, start_worker, terminal_for

USER, PASSWORD = "alice", "s3cr3tPassw0rd"


async def run_one_task(url: str, proxy: Proxy | None, tls: Tls, secure: bool) -> None:
    """A worker dialling ``url`` through ``proxy`` completes one task."""
    async with trio.open_nursery() as nursery:
        server = await start_dispatch_server(
            nursery, tls=tls if secure else None, host=local_address()
        )
        url = url.format(port=server.port, scheme=server.scheme)
        settings = fast_settings(url, proxy=proxy, ssl_context=tls.client)
        await start_worker(nursery, url, ScriptedBackend(), settings=settings)
        with trio.fail_after(20):
            await server.wait_connected()
            await server.send(assignment("t1"))
            await server.wait_for(terminal_for("t1"))
        assert isinstance(server.messages_for("t1")[-1], TaskCompleted)
        nursery.cancel_scope.cancel()


URL = "{scheme}://" + local_name() + ":{port}/api/v1/selfhosted/worker/ws"


def chosen(secure: bool, environ: dict[str, str]) -> tuple[str, Proxy]:
    """The server URL (its port still a ``{port}`` field) and the proxy ``environ`` picks."""
    url = URL.format(scheme="wss" if secure else "ws", port="{port}")
    proxy = choose_proxy(url.format(port=1), None, environ)
    assert proxy is not None
    return url, proxy


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_an_https_proxy_with_credentials_from_the_environment(
    tmp_path: Path, secure: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tls = make_tls(tmp_path)
    async with (
        running_tinyproxy(tmp_path / "proxy", basic_auth=(USER, PASSWORD)) as tinyproxy,
        running_stunnel(tmp_path / "tls", tls.ca, tinyproxy.port) as stunnel,
    ):
        variable = "HTTPS_PROXY" if secure else "HTTP_PROXY"
        environ = {variable: stunnel.url(f"{USER}:{PASSWORD}"), "ALL_PROXY": "http://nowhere:1"}
        url, proxy = chosen(secure, environ)
        assert (str(proxy), proxy.source) == (f"https://127.0.0.1:{stunnel.port}", variable)
        await run_one_task(url, proxy, tls, secure)
        # TLS to the proxy (stunnel), then CONNECT with the credentials (tinyproxy).
        assert await stunnel.accepted() >= 1
        tunnels = await tinyproxy.tunnels()
        assert len(tunnels) == 1
        assert tunnels[0].startswith(f"{local_name()}:")
        assert PASSWORD not in caplog.text


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_a_socks5_proxy(tmp_path: Path, scheme: str, secure: bool) -> None:
    tls = make_tls(tmp_path)
    async with running_dante(tmp_path / "socks") as dante:
        url, proxy = chosen(secure, {"HTTPS_PROXY" if secure else "http_proxy": dante.url(scheme)})
        assert proxy.scheme == scheme
        await run_one_task(url, proxy, tls, secure)
        # danted connected to the dispatch server's address on the worker's behalf.
        connects = dante.connects()
        assert len(connects) == 1
        assert connects[0].startswith(f"{local_address()}.")


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_a_socks5_proxy_with_credentials(
    tmp_path: Path, secure: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tls = make_tls(tmp_path)
    async with running_microsocks(USER, PASSWORD) as socks:
        environ = {"HTTPS_PROXY" if secure else "HTTP_PROXY": socks.url(f"{USER}:{PASSWORD}")}
        url, proxy = chosen(secure, environ)
        await run_one_task(url, proxy, tls, secure)
        # The proxy was given the server's name, not an address: as Go's SOCKS dialer.
        (target,) = socks.targets()
        assert target.startswith(f"{local_name()}:")
        assert PASSWORD not in caplog.text


async def first_error(proxy_url: str) -> str:
    """The error of a first dial to a closed port through ``proxy_url``."""
    url = "ws://127.0.0.1:9/ws"
    connection = Connection(
        fast_settings(url, proxy=choose_proxy(url, proxy_url, {})), Outbox(), print
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        with trio.fail_after(20):
            await connection.wait_failed_attempt()
        await connection.close()
    return connection.last_error or ""


async def test_wrong_socks5_credentials_are_a_failed_dial_with_the_cause() -> None:
    async with running_microsocks(USER, PASSWORD) as socks:
        error = await first_error(socks.url(f"{USER}:wrong"))
    assert error.startswith(f"cannot connect: proxy socks5://127.0.0.1:{socks.port} refused")
    assert error.endswith("check the credentials in server.proxy_url"), error
    assert socks.targets() == []


async def test_a_socks5_proxy_that_cannot_reach_the_server_is_named(tmp_path: Path) -> None:
    async with running_dante(tmp_path / "socks") as dante:
        error = await first_error(dante.url())
    assert error.startswith(
        f"cannot connect: proxy socks5://127.0.0.1:{dante.port} refused to connect to 127.0.0.1:9: "
    )
