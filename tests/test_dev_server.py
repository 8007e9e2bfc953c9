"""``ozw dev-server`` as a real process: how it stops, what it says when it cannot listen."""

from __future__ import annotations

import signal
import socket

import trio

from tests.ozw_command import HOST_ENV, one_error_line, run_ozw
from tests.ozw_process import REPO, OzwProcess


async def test_ctrl_c_stops_the_dev_server_cleanly_in_one_line() -> None:
    async with trio.open_nursery() as nursery:
        dev = await nursery.start(OzwProcess(["dev-server", "--port", "0"], HOST_ENV).run)
        await dev.wait_line("listening on ws://127.0.0.1:")
        dev.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            code = await dev.wait()
    assert code == 0, dev.log
    assert dev.lines[-1] == "ozw dev-server stopped (SIGINT)"
    assert "Traceback" not in dev.log


async def test_sigterm_stops_the_dev_server_cleanly() -> None:
    async with trio.open_nursery() as nursery:
        dev = await nursery.start(OzwProcess(["dev-server", "--port", "0"], HOST_ENV).run)
        await dev.wait_line("listening on")
        dev.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await dev.wait() == 0, dev.log
    assert dev.lines[-1] == "ozw dev-server stopped (SIGTERM)"


def test_a_busy_port_is_one_line_naming_the_address() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_ozw("dev-server", "--port", str(port), cwd=REPO)
    assert result.returncode == 1
    assert one_error_line(result.stderr) == (
        f"ozw: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
