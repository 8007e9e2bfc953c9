"""One engine API request through the docker CLI's own connection to the daemon.

``docker system dial-stdio`` connects to the daemon exactly as every other docker
command does (``DOCKER_HOST``, contexts, TLS, ``ssh://``) and relays its stdin and
stdout; the request is written to it as HTTP/1.1 (h11) and the answer read back. What
it carries travels through a pipe only: never a command line, a file, or the CLI's
environment. The backend uses it for ``docker create``, whose command-line form can
only take environment values through argv, a line-based env-file, or the CLI's own
environment (see :mod:`~ozw.backends.docker.container`).
"""

from __future__ import annotations

import contextlib
import json
import subprocess

import anyio
import anyio.abc
import attrs
import h11

from ozw.backends.docker.cli import DockerCLI
from ozw.backends.docker.container import docker_error

ERROR_WAIT = 5.0
"""How long to wait for the CLI's own error message once the connection failed."""


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


def _request_bytes(connection: h11.Connection, method: str, target: str, body: bytes) -> bytes:
    headers = [
        ("Host", "docker"),
        ("User-Agent", "ozw"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    return b"".join(
        [
            connection.send(h11.Request(method=method, target=target, headers=headers)) or b"",
            connection.send(h11.Data(data=body)) or b"",
            connection.send(h11.EndOfMessage()) or b"",
        ]
    )


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


async def api_request(cli: DockerCLI, method: str, target: str, body: object) -> ApiResponse:
    """``<method> <target>`` with ``body`` as JSON, through ``docker system dial-stdio``.

    Raises :class:`EngineUnreachable` (with the CLI's error) when no answer came.
    Unbounded: the caller bounds it; cancellation kills the CLI.
    """
    connection = h11.Connection(h11.CLIENT)
    request = _request_bytes(connection, method, target, json.dumps(body).encode())
    process = await anyio.open_process(
        [cli.docker, "system", "dial-stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli.environ,
        start_new_session=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    stderr: list[bytes] = []
    drained = anyio.Event()

    async def drain_stderr(stream: anyio.abc.ByteReceiveStream) -> None:
        stderr.extend([chunk async for chunk in stream])
        drained.set()

    response: ApiResponse | None = None
    failure = ""
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain_stderr, process.stderr)
            try:
                await process.stdin.send(request)
                response = await _read_response(connection, process.stdout)
            except (h11.ProtocolError, anyio.BrokenResourceError, EngineUnreachable) as exc:
                failure = str(exc) or type(exc).__name__
                # The CLI says why on stderr as it exits (no daemon, TLS, ssh...).
                with anyio.move_on_after(ERROR_WAIT):
                    await drained.wait()
            finally:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
    finally:
        with anyio.CancelScope(shield=True):
            await process.aclose()
    if response is None:
        raise EngineUnreachable(docker_error(b"".join(stderr)) if stderr else failure)
    return response
