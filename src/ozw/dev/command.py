"""``ozw dev-server``: the local dispatch server as a command, for trying a worker by hand.

It listens until Ctrl-C or SIGTERM (a clean stop: one line, exit 0), plays the
assignments script (:mod:`ozw.dev.script`; a file, checked whole before it listens,
or ``-``: lines typed on stdin, each sent as it comes) to the connected worker, logs
each frame it sends and prints every message the worker sends as a JSON line (also
appended to ``--record``). A port it cannot listen on is one ``ozw: error:`` line
naming the address (exit 1).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import IO

import trio

from ozw.cli.exit_status import EXIT_OK, EXIT_USAGE, describe
from ozw.dev.script import ScriptError, Step, parse_line, parse_script
from ozw.dev.server import DispatchServer, Received
from ozw.exception_groups import collapsed
from ozw.telemetry.logs import configure_logging

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STDIN = "-"

log = logging.getLogger(__name__)


class ListenError(Exception):
    """The server could not listen on the address it was given."""


async def _listen(server: DispatchServer, host: str, port: int, nursery: trio.Nursery) -> int:
    """Start ``server`` on ``host:port``; a failure to bind becomes one :class:`ListenError`."""
    try:
        with collapsed():
            bound: int = await nursery.start(server.serve, host, port)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {describe(exc)}") from None
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
    """Run the dev server until Ctrl-C, playing the assignments script to the worker."""
    try:
        steps = _file_steps(assignments) if assignments not in (None, STDIN) else []
    except ScriptError as exc:
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
            script = _stdin_steps() if assignments == STDIN else _listed(steps)
            sent = await _play(server, script)
            if assignments is not None:
                log.info("%s", script_ended(assignments, sent))
            await trio.sleep_forever()

    try:
        trio.run(main)
    finally:
        if record_file is not None:
            record_file.close()
    print(f"ozw dev-server stopped ({', '.join(stopped)})", file=sys.stderr, flush=True)
    return EXIT_OK


def _file_steps(name: str) -> list[Step]:
    path = Path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(describe(exc)) from None  # it names the file
    except UnicodeDecodeError:
        raise ScriptError(f"{path}: not UTF-8 text") from None
    return list(parse_script(text.splitlines(), str(path)))


async def _listed(steps: Iterable[Step]) -> AsyncIterator[Step]:
    for step in steps:
        yield step


async def _stdin_steps() -> AsyncIterator[Step]:
    """Steps typed on stdin, each as it comes; a bad line is logged and skipped."""
    number = 0
    while True:
        # A thread blocked in readline cannot be cancelled: Ctrl-C abandons it.
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            log.info("stdin closed: no more lines to send")
            return
        number += 1
        try:
            step = parse_line(line)
        except ScriptError as exc:
            log.warning("stdin:%d: %s (line ignored)", number, exc)
            continue
        if step is not None:
            yield step


def script_ended(assignments: str, sent: int) -> str:
    """What the server does once its script has nothing left to send: it listens on."""
    source = "stdin" if assignments == STDIN else assignments
    return (
        f"assignments script {source} ended ({sent} sent); still listening: the worker's "
        "messages are printed as they come, a worker may reconnect; Ctrl-C or SIGTERM stops"
    )


async def _play(server: DispatchServer, steps: AsyncIterator[Step]) -> int:
    """Send each step to the connected worker, ``after`` seconds after the one before;
    returns how many were sent."""
    sent = 0
    async for step in steps:
        await server.wait_connected()
        if step.after:
            log.info("sending %s in %gs", step.summary, step.after)
            await trio.sleep(step.after)
        await server.send(step.frame)
        log.info("sent %s", step.summary)
        sent += 1
    return sent


def _print_received(item: Received, record_file: IO[str] | None) -> None:
    line = json.dumps({"worker_id": item.worker_id, **json.loads(item.frame)})
    print(line, flush=True)
    if record_file is not None:
        record_file.write(line + "\n")
        record_file.flush()
