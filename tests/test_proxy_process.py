"""A real ``ozw run`` behind a real tinyproxy, configured by the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.support import tinyproxy as proxying
from tests.support.ozw_process import STANDIN_AGENT, OzwProcess
from tests.support.worker import API_KEY

pytestmark = pytest.mark.slow

PASSWORD = "Pr0xyPassw0rd"


def write_config(tmp_path: Path, websocket_url: str, server_extra: str = "") -> Path:
    config = tmp_path / "worker.toml"
    config.write_text(
        f"""
worker_id = "proxied-worker"

[server]
websocket_url = "{websocket_url}"
{server_extra}

[backend.direct]
workspace_root = "{tmp_path / "workspaces"}"
oz_path = "{STANDIN_AGENT}"
"""
    )
    return config


def proxy_free_env(**extra: str) -> dict[str, str]:
    """This process's environment without any proxy or key of its own, plus ``extra``."""
    names = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in names and not name.startswith("WARP_")
    }
    return {**env, "WARP_API_KEY": API_KEY, **extra}


async def test_ozw_run_dials_wss_through_https_proxy_with_credentials(tmp_path: Path) -> None:
    tls = proxying.make_tls(tmp_path)
    async with (
        proxying.running_tinyproxy(
            tmp_path / "proxy", basic_auth=("worker", PASSWORD)
        ) as tinyproxy,
        trio.open_nursery() as nursery,
    ):
        server = await proxying.start_dispatch_server(
            nursery, tls=tls, host=proxying.local_address()
        )
        url = proxying.server_url(server, proxying.local_name())
        env = proxy_free_env(
            HTTPS_PROXY=tinyproxy.url(f"worker:{PASSWORD}"),
            NO_PROXY="example.org",
            # The system's trust store plus nothing: OpenSSL reads the test CA from here.
            SSL_CERT_FILE=str(tls.ca_file),
        )
        ozw = OzwProcess(["--config", str(write_config(tmp_path, url))], env)
        await nursery.start(ozw.run)
        with trio.fail_after(30):
            await ozw.wait_line(rf"connected to wss://\S+ through proxy {tinyproxy.address}")
            await server.wait_connected()
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
        assert await tinyproxy.tunnels() == [f"{proxying.local_name()}:{server.port}"]
        assert PASSWORD not in ozw.log
        assert "Traceback" not in ozw.log
        nursery.cancel_scope.cancel()


async def test_no_proxy_sends_ozw_run_straight_to_the_server(tmp_path: Path) -> None:
    async with (
        proxying.running_tinyproxy(tmp_path / "proxy") as tinyproxy,
        trio.open_nursery() as nursery,
    ):
        server = await proxying.start_dispatch_server(nursery, host=proxying.local_address())
        url = proxying.server_url(server, proxying.local_name())
        env = proxy_free_env(
            http_proxy=tinyproxy.url(), no_proxy=f"example.org, {proxying.local_name()}"
        )
        ozw = OzwProcess(["--config", str(write_config(tmp_path, url))], env)
        await nursery.start(ozw.run)
        with trio.fail_after(30):
            line = await ozw.wait_line(r"connected to ws://")
            await server.wait_connected()
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
        assert "through proxy" not in line
        assert await tinyproxy.tunnels() == []
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("where", ["file", "flag"])
async def test_the_proxy_setting_wins_over_the_environment(tmp_path: Path, where: str) -> None:
    async with (
        proxying.running_tinyproxy(
            tmp_path / "proxy", basic_auth=("worker", PASSWORD)
        ) as tinyproxy,
        trio.open_nursery() as nursery,
    ):
        server = await proxying.start_dispatch_server(nursery)
        proxy_url = tinyproxy.url(f"worker:{PASSWORD}")
        in_file = f'proxy_url = "{proxy_url}"' if where == "file" else ""
        args = ["--config", str(write_config(tmp_path, server.url, in_file))]
        if where == "flag":
            args += ["--proxy-url", proxy_url]
        # NO_PROXY and the loopback rule concern the environment's proxies only.
        env = proxy_free_env(HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="*")
        ozw = OzwProcess(args, env)
        await nursery.start(ozw.run)
        with trio.fail_after(30):
            await ozw.wait_line(rf"connected to ws://\S+ through proxy {tinyproxy.address}")
            await server.wait_connected()
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
        assert await tinyproxy.tunnels() == [f"127.0.0.1:{server.port}"]
        assert PASSWORD not in ozw.log
        nursery.cancel_scope.cancel()


def test_an_unusable_proxy_variable_is_one_line_without_its_credentials(tmp_path: Path) -> None:
    config = write_config(tmp_path, "wss://oz.example.com/ws")
    env = proxy_free_env(HTTPS_PROXY="socks4://worker:Sh0uldNotShow@proxy.corp:1080")
    result = subprocess.run(
        [sys.executable, "-m", "ozw", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "ozw: error: HTTPS_PROXY: socks4:// proxies are not supported (use http://, https://, "
        "socks5://, socks5h://; the Go worker cannot dial through it either)\n"
    )
