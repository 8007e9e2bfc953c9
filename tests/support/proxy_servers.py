"""Real proxy servers on 127.0.0.1 whose logs are read line by line: the base of
tinyproxy (tests/support/tinyproxy.py), stunnel4 in front of it (an https:// proxy:
TLS to the proxy), Dante's ``danted`` (a SOCKS5 proxy) and ``microsocks`` (a SOCKS5
proxy with a user and password of its own, no system account needed).

Each log is the proof a connection took the path a test says it took.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio
import trustme

from tests.support.ports import free_port

STUNNEL = shutil.which("stunnel4") or "/usr/bin/stunnel4"
DANTED = shutil.which("danted") or "/usr/sbin/danted"
MICROSOCKS = shutil.which("microsocks") or "/usr/bin/microsocks"


class LoggedServer:
    """A server process listening on ``port`` whose log lines are collected."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: list[str] = []
        self._changed = trio.Event()

    async def read_log(self, stdout: trio.abc.ReceiveStream) -> None:
        pending = b""
        async for chunk in stdout:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in lines)
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def wait_line(self, text: str) -> bool:
        """Wait until a log line contains ``text``; False if the log ended first."""
        seen = 0
        while True:
            if any(text in line for line in self.lines[seen:]):
                return True
            seen = len(self.lines)
            changed = self._changed
            await changed.wait()
            if changed is self._changed:  # set and not replaced: the log ended
                return any(text in line for line in self.lines[seen:])


Server = TypeVar("Server", bound=LoggedServer)


async def _accepting(port: int) -> bool:
    """Whether something accepts connections on ``port`` (for servers that log no start)."""
    for _attempt in range(200):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.05)
        else:
            await stream.aclose()
            return True
    return False


@asynccontextmanager
async def running(
    make: Callable[[int], Server], argv: Callable[[Server], list[str]], ready: str | None
) -> AsyncIterator[Server]:
    """The server ``make(port)`` runs as ``argv(server)`` (its log on stdout or stderr)
    for the block, once its log says ``ready`` (None: once it accepts connections);
    another free port if that one was taken."""
    for _attempt in range(5):
        server = make(free_port())
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                functools.partial(
                    trio.run_process,
                    argv(server),
                    check=False,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            )
            assert process.stdout is not None
            nursery.start_soon(server.read_log, process.stdout)
            with trio.fail_after(20):
                started = await (
                    _accepting(server.port) if ready is None else server.wait_line(ready)
                )
            if started:
                try:
                    yield server
                    return
                finally:
                    nursery.cancel_scope.cancel()
            # Most likely another process took the free port first: try another.
    raise RuntimeError(f"{argv(server)[0]} did not start; its log:\n" + "\n".join(server.lines))


class Stunnel(LoggedServer):
    """stunnel4 terminating TLS on ``port`` and forwarding to a local port."""

    def url(self, credentials: str = "") -> str:
        return f"https://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    async def accepted(self) -> int:
        """How many TLS connections stunnel forwarded so far (each logged when connected)."""
        return sum("Service [proxy] connected remote server" in line for line in self.lines)


def _certificate(directory: Path, ca: trustme.CA) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pem = directory / "stunnel.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    pem.chmod(0o600)
    return pem


@asynccontextmanager
async def running_stunnel(
    directory: Path, ca: trustme.CA, forward_to: int
) -> AsyncIterator[Stunnel]:
    """stunnel4 with a certificate of ``ca`` for 127.0.0.1, forwarding to ``forward_to``."""
    pem = _certificate(directory, ca)

    def argv(server: Stunnel) -> list[str]:
        config = directory / "stunnel.conf"
        config.write_text(
            "foreground = yes\npid =\ndebug = info\n[proxy]\n"
            f"accept = 127.0.0.1:{server.port}\nconnect = 127.0.0.1:{forward_to}\ncert = {pem}\n"
        )
        return [STUNNEL, str(config)]

    async with running(Stunnel, argv, "Accepting new connections") as server:
        yield server


class Dante(LoggedServer):
    """danted, a SOCKS5 server on ``port``, logging every connection it makes."""

    def url(self, scheme: str = "socks5", credentials: str = "") -> str:
        return f"{scheme}://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    def connects(self) -> list[str]:
        """The ``address.port`` of each target danted connected to, in order."""
        found = []
        for line in self.lines:
            if "tcp/connect [" in line:  # "[": the session's start
                found.append(line.rsplit(" ", 1)[-1])
        return found


@asynccontextmanager
async def running_dante(directory: Path) -> AsyncIterator[Dante]:
    """danted without authentication, for clients and targets on 127.0.0.1."""

    def argv(server: Dante) -> list[str]:
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "danted.conf"
        config.write_text(
            f"logoutput: stderr\ninternal: 127.0.0.1 port = {server.port}\n"
            "external: 127.0.0.1\nsocksmethod: none\nclientmethod: none\n"
            "user.privileged: root\nuser.unprivileged: nobody\n"
            "client pass {\n from: 127.0.0.0/8 to: 0.0.0.0/0\n log: connect error\n}\n"
            "socks pass {\n from: 127.0.0.0/8 to: 0.0.0.0/0\n command: connect\n"
            " log: connect error\n}\n"
        )
        return [DANTED, "-f", str(config), "-p", str(directory / "danted.pid"), "-N", "1"]

    async with running(Dante, argv, "running") as server:
        yield server


class Microsocks(LoggedServer):
    """microsocks on ``port``, with one user; it logs each target it connects to."""

    def url(self, credentials: str) -> str:
        return f"socks5://{credentials}@127.0.0.1:{self.port}"

    def targets(self) -> list[str]:
        """The ``host:port`` of each connection made, as the client named the host."""
        return [line.rsplit(" ", 1)[-1] for line in self.lines if ": connected to " in line]


@asynccontextmanager
async def running_microsocks(user: str, password: str) -> AsyncIterator[Microsocks]:
    def argv(server: Microsocks) -> list[str]:
        return [MICROSOCKS, "-i", "127.0.0.1", "-p", str(server.port), "-u", user, "-P", password]

    async with running(Microsocks, argv, None) as server:
        yield server
