"""``ozw dev-server``: the local dispatch server as a command, for trying a worker by hand.

It listens until Ctrl-C or SIGTERM (a clean stop: one line, exit 0), sends the
assignments file to the first worker that connects, and prints every message the
worker sends as a JSON line (also appended to ``--record``). A port it cannot listen
on is one ``ozw: error:`` line naming the address (exit 1).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import IO, Any

import trio

from ozw.devserver import DispatchServer, Received
from ozw.exit_status import EXIT_OK, EXIT_USAGE, describe, leaves
from ozw.logs import configure_logging

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ListenError(Exception):
    """The server could not listen on the address it was given."""


def load_frames(path: Path) -> list[str]:
    """Read a JSON-lines file of frames; a bare object is taken as a task_assignment's data."""
    frames: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj: Any = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        if "type" not in obj:
            obj = {"type": "task_assignment", "data": obj}
        frames.append(json.dumps(obj, separators=(",", ":")))
    return frames


async def _listen(server: DispatchServer, host: str, port: int, nursery: trio.Nursery) -> int:
    """Start ``server`` on ``host:port``; a failure to bind becomes one :class:`ListenError`."""
    try:
        bound: int = await nursery.start(server.serve, host, port)
    except (OSError, BaseExceptionGroup) as exc:
        cause = next((leaf for leaf in leaves(exc) if isinstance(leaf, OSError)), None)
        if cause is None:
            raise
        raise ListenError(f"cannot listen on {host}:{port}: {describe(cause)}") from None
    return bound


async def _stop_on_signal(
    stopped: list[str], cancel_scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
) -> None:
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            stopped.append(signal.Signals(signum).name)
            cancel_scope.cancel()
            return


def serve_cli(
    *, host: str, port: int, api_key: str, assignments: str | None, record: str | None
) -> int:
    """Run the dev server until Ctrl-C; send the assignments file to the first worker."""
    try:
        frames = load_frames(Path(assignments)) if assignments else []
    except (OSError, ValueError) as exc:
        print(f"ozw: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging("info", "human", sys.stderr)
    # A small local file, appended line by line: blocking writes are fine here.
    record_file = open(record, "a", encoding="utf-8") if record else None  # noqa: SIM115
    stopped: list[str] = []

    async def main() -> None:
        server = DispatchServer(api_key)
        server.on_receive.append(lambda item: _print_received(item, record_file))
        async with trio.open_nursery() as nursery:
            await nursery.start(_stop_on_signal, stopped, nursery.cancel_scope)
            bound = await _listen(server, host, port, nursery)
            print(
                f"ozw dev-server listening on ws://{host}:{bound}/api/v1/selfhosted/worker/ws "
                "(Ctrl-C stops)",
                file=sys.stderr,
                flush=True,
            )
            for frame in frames:
                await server.send(frame)
            await trio.sleep_forever()

    try:
        trio.run(main)
    finally:
        if record_file is not None:
            record_file.close()
    print(f"ozw dev-server stopped ({', '.join(stopped)})", file=sys.stderr, flush=True)
    return EXIT_OK


def _print_received(item: Received, record_file: IO[str] | None) -> None:
    line = json.dumps({"worker_id": item.worker_id, **json.loads(item.frame)})
    print(line, flush=True)
    if record_file is not None:
        record_file.write(line + "\n")
        record_file.flush()
