"""Engine API requests through the docker CLI's own connection to the daemon.

``docker system dial-stdio`` connects to the daemon exactly as every other docker
command does (``DOCKER_HOST``, contexts, TLS, ``ssh://``) and relays its stdin and
stdout; requests are written to it as HTTP/1.1 (h11) and the answers read back, one
after the other on the same connection. What it carries travels through a pipe only:
never a command line, a file, or the CLI's environment. The backend uses it for
``docker create``, whose command-line form can only take environment values through
argv, a line-based env-file, or the CLI's own environment (see
:mod:`~ozw.backends.docker.rules`), and for the per-task check that a sidecar
volume still exists, the image inspections of a task's setup, and the inspection
and removal of its container at teardown. A task takes a connection as its setup
starts and as its teardown starts: the spare :class:`EngineConnections` keeps (opened
ahead, or given back by an earlier task once it was done with it), or else a new
one. So tasks one after the other share one CLI process: none starts per task.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from typing import Self

import anyio
import anyio.abc
import attrs
import h11

from ozw.backends.docker.cli import DockerCLI
from ozw.backends.docker.rules import docker_error

ERROR_WAIT = 5.0
"""How long to wait for the CLI's own error message once the connection failed."""
NOT_FOUND = 404
"""The engine's answer for an image, volume or container that does not exist."""
PING_WAIT = 2.0
"""How long a spare connection may take to answer a ping before a fresh one is opened."""


@attrs.frozen
class ApiResponse:
    """The engine's answer: its HTTP status and body."""

    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def id(self) -> str:
        """The ``Id`` of what the request created ("" when the body has none)."""
        try:
            created = json.loads(self.body).get("Id")
        except (ValueError, AttributeError):
            return ""
        return created if isinstance(created, str) else ""

    @property
    def message(self) -> str:
        """The engine's error message (its JSON ``message``), as one line."""
        try:
            message = json.loads(self.body).get("message")
        except (ValueError, AttributeError):
            message = None
        text = message if isinstance(message, str) else self.body.decode(errors="replace")
        return " ".join(text.split()) or f"HTTP status {self.status}"


class EngineUnreachable(Exception):
    """``docker system dial-stdio`` ended without an answer; the message says why."""


def _request_bytes(
    connection: h11.Connection, method: str, target: str, body: bytes | None
) -> bytes:
    headers = [("Host", "docker"), ("User-Agent", "ozw")]
    if body is not None:
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    parts = [connection.send(h11.Request(method=method, target=target, headers=headers))]
    if body is not None:
        parts.append(connection.send(h11.Data(data=body)))
    parts.append(connection.send(h11.EndOfMessage()))
    return b"".join(part or b"" for part in parts)


async def _read_response(
    connection: h11.Connection, stdout: anyio.abc.ByteReceiveStream
) -> ApiResponse:
    status: int | None = None
    chunks: list[bytes] = []
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            try:
                connection.receive_data(await stdout.receive())
            except anyio.EndOfStream:
                connection.receive_data(b"")
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert status is not None
            return ApiResponse(status, b"".join(chunks))
        elif isinstance(event, h11.ConnectionClosed):
            raise EngineUnreachable("the connection closed before an answer")


class EngineConnection:
    """One ``docker system dial-stdio`` child: requests one at a time, kept alive.

    Open with :meth:`open`, close with :meth:`aclose` (or ``async with``). A request
    raises :class:`EngineUnreachable` (with the CLI's error) when no answer came; the
    connection is then unusable, as it is after a cancelled request. Requests are
    unbounded: the caller bounds them; cancellation breaks the connection.
    """

    def __init__(self, process: anyio.abc.Process) -> None:
        self._process = process
        self._http = h11.Connection(h11.CLIENT)
        self._lock = anyio.Lock()
        self._failure: str | None = None
        """Why the connection is unusable, once it is."""

    @classmethod
    async def open(cls, cli: DockerCLI) -> Self:
        """Start the CLI; it connects while the caller goes on."""
        process = await anyio.open_process(
            [cli.docker, "system", "dial-stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli.environ,
            start_new_session=True,
        )
        return cls(process)

    @property
    def usable(self) -> bool:
        """False once a request failed or was interrupted, or the CLI has exited."""
        return self._failure is None and self._process.returncode is None

    async def request(self, method: str, target: str, body: object = None) -> ApiResponse:
        """``<method> <target>`` with ``body`` as JSON (none when None); the answer."""
        async with self._lock:
            if self._failure is not None:
                raise EngineUnreachable(self._failure)
            self._failure = "a request was interrupted"
            payload = None if body is None else json.dumps(body).encode()
            try:
                process = self._process
                assert process.stdin is not None
                assert process.stdout is not None
                await process.stdin.send(_request_bytes(self._http, method, target, payload))
                response = await _read_response(self._http, process.stdout)
            except (h11.ProtocolError, anyio.BrokenResourceError, EngineUnreachable) as exc:
                self._failure = await self._cli_error() or str(exc) or type(exc).__name__
                raise EngineUnreachable(self._failure) from None
            if self._http.our_state is h11.DONE and self._http.their_state is h11.DONE:
                self._http.start_next_cycle()
                self._failure = None
            else:
                self._failure = "the engine closed the connection"
            return response

    async def _cli_error(self) -> str:
        """What the CLI says on stderr as it exits (no daemon, TLS, ssh...), if anything."""
        stderr = self._process.stderr
        assert stderr is not None
        chunks: list[bytes] = []
        with anyio.move_on_after(ERROR_WAIT):
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    chunks.append(await stderr.receive())
        return docker_error(b"".join(chunks)) if chunks else ""

    async def aclose(self) -> None:
        """Stop the CLI (shielded: also when the caller is cancelled)."""
        self._failure = "the connection is closed"
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        with anyio.CancelScope(shield=True):
            await self._process.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def answer_on(
    engine: EngineConnection | None, method: str, target: str
) -> ApiResponse | None:
    """The engine's answer on ``engine``; None when there is no usable connection or it
    gave no answer (the caller then asks the docker CLI instead)."""
    if engine is None or not engine.usable:
        return None
    try:
        return await engine.request(method, target)
    except EngineUnreachable:
        return None


class EngineConnections:
    """Hands out engine connections, keeping one opened ahead for the next task.

    A task's first engine request would otherwise wait for its CLI to start and
    connect; the spare has done that already. A spare is pinged before it is handed
    out (the daemon may have restarted since it was opened) and replaced by a fresh
    connection when it does not answer.
    """

    def __init__(self, cli: DockerCLI) -> None:
        self.cli = cli
        self._spare: EngineConnection | None = None
        self._closed = True
        """No spare is kept until :meth:`keep_spares`: someone must close it."""

    def keep_spares(self) -> None:
        """Keep a spare from now on (until :meth:`aclose`)."""
        self._closed = False

    @property
    def has_spare(self) -> bool:
        return self._spare is not None

    async def take(self) -> EngineConnection:
        """A connection of the caller's own (closed by the caller)."""
        spare, self._spare = self._spare, None
        if spare is not None:
            answered = False
            try:
                with anyio.move_on_after(PING_WAIT), contextlib.suppress(EngineUnreachable):
                    answered = (await spare.request("GET", "/_ping")).ok
            finally:
                if not answered:
                    await spare.aclose()
            if answered:
                return spare
        return await EngineConnection.open(self.cli)

    async def give_back(self, connection: EngineConnection) -> None:
        """Keep ``connection`` as the spare when it still works and none is kept; else
        close it. The next task then starts no CLI process to reach the engine."""
        if self._spare is None and not self._closed and connection.usable:
            self._spare = connection
        else:
            await connection.aclose()

    async def refill(self) -> None:
        """Open the spare for the next task, unless there is one (or this is closed)."""
        if self._spare is None and not self._closed:
            self._spare = await EngineConnection.open(self.cli)

    async def aclose(self) -> None:
        """Close the spare; none is opened afterwards."""
        self._closed = True
        spare, self._spare = self._spare, None
        if spare is not None:
            await spare.aclose()
