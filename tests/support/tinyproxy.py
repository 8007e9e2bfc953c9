"""A real ``tinyproxy`` (Debian's package) on 127.0.0.1, and a TLS dispatch server.

tinyproxy cannot bind port 0, so a free port is picked (and picked again if another
process takes it first). Its log records each CONNECT it is asked for: that is how
the tests know a connection really went through the proxy.
"""

from __future__ import annotations

import functools
import re
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
import trustme

from ozw.dev.server import DispatchServer
from tests.support.proxy_servers import LoggedServer, running
from tests.support.worker import API_KEY

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
_CONNECT = re.compile(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP")


class Tinyproxy(LoggedServer):
    """A running tinyproxy whose log (its standard output) is read line by line."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self._syncs = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    async def tunnels(self) -> list[str]:
        """The ``host:port`` of every CONNECT the proxy was asked for so far, in order.

        A marker CONNECT is sent first and its log line awaited: every earlier request
        has been logged (and read) by then, so the answer is complete.
        """
        self._syncs += 1
        marker = f"log-sync-{self._syncs}.invalid:1"
        async with await trio.open_tcp_stream("127.0.0.1", self.port) as stream:
            await stream.send_all(f"CONNECT {marker} HTTP/1.1\r\nHost: {marker}\r\n\r\n".encode())
            assert await self.wait_line(f"CONNECT {marker} "), "\n".join(self.lines)
        found = _CONNECT.findall("\n".join(self.lines))
        return [target for target in found if not target.startswith("log-sync-")]


def _write_config(
    directory: Path, port: int, basic_auth: tuple[str, str] | None, connect_ports: str
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 60",
        "LogLevel Info",  # Info: the line that says it accepts connections
        "MaxClients 50",
        "Allow 127.0.0.1",
    ]
    if basic_auth is not None:
        lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
    if connect_ports:
        lines.append(f"ConnectPort {connect_ports}")
    config = directory / "tinyproxy.conf"
    config.write_text("\n".join(lines) + "\n")
    return config


@asynccontextmanager
async def running_tinyproxy(
    directory: Path, *, basic_auth: tuple[str, str] | None = None, connect_ports: str = ""
) -> AsyncIterator[Tinyproxy]:
    """tinyproxy for the duration of the block; ``connect_ports`` limits CONNECT targets."""

    def argv(proxy: Tinyproxy) -> list[str]:
        config = _write_config(directory, proxy.port, basic_auth, connect_ports)
        # In the foreground (-d) without a LogFile, tinyproxy logs to its stdout.
        return [TINYPROXY, "-d", "-c", str(config)]

    async with running(Tinyproxy, argv, "Accepting connections") as proxy:
        yield proxy


@attrs.frozen
class Tls:
    """A throw-away CA, a server certificate for the local names, and both contexts."""

    ca_file: Path
    server: ssl.SSLContext
    client: ssl.SSLContext
    ca: trustme.CA


def make_tls(directory: Path) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost", socket.gethostname())
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Tls(ca_file, server, client, ca)


def local_name() -> str:
    """A name of this machine that is neither ``localhost`` nor an address.

    Go (and ozw) never send ``localhost`` or a loopback address to the environment's
    proxy, so the tests of ``HTTPS_PROXY`` & co. dial the machine by its host name,
    which the proxy resolves to a local address.
    """
    return socket.gethostname()


def local_address() -> str:
    """The address :func:`local_name` resolves to (the test server listens there)."""
    address = socket.getaddrinfo(local_name(), None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    return str(address)


async def start_dispatch_server(
    nursery: trio.Nursery, *, tls: Tls | None = None, host: str = "127.0.0.1"
) -> DispatchServer:
    server = DispatchServer(API_KEY)
    await nursery.start(
        functools.partial(server.serve, host, 0, ssl_context=tls.server if tls else None)
    )
    return server


def server_url(server: DispatchServer, host: str = "127.0.0.1") -> str:
    return f"{server.scheme}://{host}:{server.port}/api/v1/selfhosted/worker/ws"
