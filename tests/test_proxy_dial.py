"""Dialling the dispatch server through a real tinyproxy (docs/protocol.md, "Proxies").

Each test checks tinyproxy's own log: a connection counted as proxied really asked
the proxy for a tunnel, and a bypassed one never did.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from ozw.link.connection import Connection
from ozw.link.outbox import Outbox
from ozw.link.proxy import Proxy, choose_proxy, parse_proxy_url
from ozw.wire.codec import TaskClaimed, TaskCompleted
from tests.support.scripted_backend import ScriptedBackend
from tests.support.tinyproxy import (
    local_address,
    local_name,
    make_tls,
    running_tinyproxy,
    server_url,
    start_dispatch_server,
)
from tests.support.worker import assignment, dial_once, fast_settings, start_worker, terminal_for

USER, PASSWORD = "alice", "s3cr3tPassw0rd"


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_worker_runs_a_task_through_the_proxy_with_credentials(
    tmp_path: Path, secure: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tls = make_tls(tmp_path) if secure else None
    async with (
        running_tinyproxy(tmp_path / "proxy", basic_auth=(USER, PASSWORD)) as tinyproxy,
        trio.open_nursery() as nursery,
    ):
        server = await start_dispatch_server(nursery, tls=tls)
        url = server_url(server)
        # The user name percent-encoded: the proxy must receive it decoded.
        proxy = choose_proxy(url, tinyproxy.url(f"al%69ce:{PASSWORD}"), {})
        settings = fast_settings(url, proxy=proxy, ssl_context=tls.client if tls else None)
        worker = await start_worker(nursery, url, ScriptedBackend(), settings=settings)
        with trio.fail_after(20):
            await server.wait_connected()
            await server.send(assignment("t1"))
            await server.wait_for(terminal_for("t1"))
        assert server.messages_for("t1")[0] == TaskClaimed("t1", "w1")
        assert isinstance(server.messages_for("t1")[-1], TaskCompleted)
        assert await tinyproxy.tunnels() == [f"127.0.0.1:{server.port}"]
        assert f"through proxy {tinyproxy.address}" in caplog.text
        assert PASSWORD not in caplog.text
        assert worker.connection.connects == 1
        nursery.cancel_scope.cancel()


async def test_the_proxy_setting_is_used_even_for_a_local_server(tmp_path: Path) -> None:
    async with running_tinyproxy(tmp_path) as tinyproxy, trio.open_nursery() as nursery:
        server = await start_dispatch_server(nursery)
        url = f"ws://localhost:{server.port}/ws"
        connection = Connection(
            fast_settings(url, proxy=parse_proxy_url(tinyproxy.url())), Outbox(), lambda _: None
        )
        nursery.start_soon(connection.run)
        with trio.fail_after(20):
            await connection.wait_connected()
        assert await tinyproxy.tunnels() == [f"localhost:{server.port}"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_environment_proxy_and_no_proxy_bypass(tmp_path: Path, secure: bool) -> None:
    tls = make_tls(tmp_path) if secure else None
    variable = "HTTPS_PROXY" if secure else "http_proxy"
    async with running_tinyproxy(tmp_path / "proxy") as tinyproxy, trio.open_nursery() as nursery:
        server = await start_dispatch_server(nursery, tls=tls, host=local_address())
        url = server_url(server, local_name())
        for environ, proxied in (
            ({variable: tinyproxy.url()}, True),
            ({variable: tinyproxy.url(), "NO_PROXY": f"example.org,{local_name()}"}, False),
            ({variable: tinyproxy.url(), "no_proxy": f"*.{local_name()}"}, True),
            ({"ALL_PROXY": tinyproxy.url()}, False),  # Go never reads ALL_PROXY
        ):
            before = len(await tinyproxy.tunnels())
            proxy = choose_proxy(url, None, environ)
            assert (proxy is not None) is proxied
            settings = fast_settings(url, proxy=proxy, ssl_context=tls.client if tls else None)
            await dial_once(settings, succeed=True)
            tunnels = (await tinyproxy.tunnels())[before:]
            assert tunnels == ([f"{local_name()}:{server.port}"] if proxied else []), environ
        assert server.connections == 4
        nursery.cancel_scope.cancel()


async def failed_dial(url: str, proxy: Proxy) -> Connection:
    """Dial once through ``proxy``; returns the connection after its first failure."""
    connection = Connection(fast_settings(url, proxy=proxy), Outbox(), lambda _: None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        with trio.fail_after(20):
            await connection.wait_failed_attempt()
            await connection.wait_failed_attempt()  # and it keeps dialling, with back-off
        await connection.close()
    assert connection.connects == 0
    return connection


async def test_wrong_credentials_are_a_failed_dial_with_the_cause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        running_tinyproxy(tmp_path, basic_auth=(USER, PASSWORD)) as tinyproxy,
        trio.open_nursery() as nursery,
    ):
        server = await start_dispatch_server(nursery)
        for credentials, answer in (
            (f"{USER}:wrong-Pa55word", "401 Unauthorized"),
            ("", "407 Proxy Authentication Required"),
        ):
            proxy = parse_proxy_url(tinyproxy.url(credentials))
            connection = await failed_dial(server.url, proxy)
            assert connection.last_error == (
                f"cannot connect: proxy {tinyproxy.address} refused CONNECT "
                f"127.0.0.1:{server.port}: HTTP {answer}; "
                "check the credentials in server.proxy_url"
            )
        assert server.connections == 0
        assert "wrong-Pa55word" not in caplog.text
        assert "HTTP 407" in caplog.text
        assert len(await tinyproxy.tunnels()) >= 4
        nursery.cancel_scope.cancel()


async def test_a_forbidden_port_and_an_unreachable_server_are_failed_dials(
    tmp_path: Path,
) -> None:
    async with (
        running_tinyproxy(tmp_path, connect_ports="443") as tinyproxy,
        trio.open_nursery() as nursery,
    ):
        server = await start_dispatch_server(nursery)
        proxy = parse_proxy_url(tinyproxy.url())
        forbidden = await failed_dial(server.url, proxy)
        assert f"refused CONNECT 127.0.0.1:{server.port}: HTTP 403" in (forbidden.last_error or "")
        # Port 443 is allowed but nothing listens there: the proxy cannot reach it.
        unreachable = await failed_dial("wss://127.0.0.1:443/ws", proxy)
        assert "refused CONNECT 127.0.0.1:443: HTTP 5" in (unreachable.last_error or "")
        assert server.connections == 0
        assert len(await tinyproxy.tunnels()) >= 4
        nursery.cancel_scope.cancel()


async def test_a_proxy_that_is_not_there_is_named(tmp_path: Path) -> None:
    async with running_tinyproxy(tmp_path) as tinyproxy:
        port = tinyproxy.port
    # tinyproxy has stopped: nothing listens on its port any more.
    connection = await failed_dial(
        "ws://127.0.0.1:9/ws", parse_proxy_url(f"http://u:p4ss@127.0.0.1:{port}")
    )
    assert (connection.last_error or "").startswith(
        f"cannot connect: cannot reach proxy 127.0.0.1:{port} (server.proxy_url): "
    )
    assert "p4ss" not in (connection.last_error or "")


async def test_an_untrusted_certificate_inside_the_tunnel_says_so(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    async with running_tinyproxy(tmp_path / "proxy") as tinyproxy, trio.open_nursery() as nursery:
        server = await start_dispatch_server(nursery, tls=tls)
        # No ssl_context: the system's authorities, which do not know the test CA.
        connection = await failed_dial(server_url(server), parse_proxy_url(tinyproxy.url()))
        assert "CERTIFICATE_VERIFY_FAILED" in (connection.last_error or "")
        assert server.connections == 0
        nursery.cancel_scope.cancel()
