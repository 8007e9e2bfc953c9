"""``ozw dev-server`` as a real process: how it stops, what it cannot listen on, its script."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from tests.support.ozw_command import HOST_ENV, OZW, one_error_line, run_ozw
from tests.support.ozw_process import REPO, OzwProcess
from tests.support.pipe_lines import LineReader


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_ctrl_c_or_sigterm_stops_the_dev_server_cleanly_in_one_line(
    signum: signal.Signals,
) -> None:
    async with trio.open_nursery() as nursery:
        dev = await nursery.start(OzwProcess(["dev-server", "--port", "0"], HOST_ENV).run)
        await dev.wait_line("listening on ws://127.0.0.1:")
        dev.send_signal(signum)
        with trio.fail_after(30):
            code = await dev.wait()
    assert code == 0, dev.log
    assert dev.lines[-1] == f"ozw dev-server stopped ({signum.name})"
    assert "Traceback" not in dev.log


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


def worker_config(tmp_path: Path) -> Path:
    """The direct example config with a private workspace root."""
    example = (REPO / "config" / "examples" / "direct.toml").read_text()
    assert '"/tmp/ozw-workspaces"' in example
    config = tmp_path / "direct.toml"
    config.write_text(example.replace('"/tmp/ozw-workspaces"', f'"{tmp_path / "ws"}"'))
    return config


async def test_the_example_assignments_run_through_a_real_worker(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    args = ["dev-server", "--port", "0", "--assignments", "examples/assignments.jsonl"]
    async with trio.open_nursery() as nursery:
        dev = await nursery.start(OzwProcess([*args, "--record", str(record)], HOST_ENV).run)
        listening = await dev.wait_line(r"listening on (ws://\S+)")
        url = listening.split()[-3]
        worker = await nursery.start(
            OzwProcess(
                [
                    "--config",
                    str(worker_config(tmp_path)),
                    "--websocket-url",
                    url,
                    "--max-tasks",
                    "3",
                ],
                {**HOST_ENV, "WARP_API_KEY": "dev-key"},
            ).run
        )
        with trio.fail_after(60):
            assert await worker.wait() == 0, worker.log
        dev.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await dev.wait() == 0, dev.log
    outcomes = {
        line["data"]["task_id"]: line
        for line in map(json.loads, record.read_text().splitlines())
        if line["type"] != "task_claimed"
    }
    assert outcomes["hello-1"]["type"] == "task_completed"
    assert "task_state" not in outcomes["hello-1"]["data"]
    # The timed cancellation ("after": "3s") cancelled the long task.
    assert outcomes["long-1"]["data"]["task_state"] == "CANCELLED"
    assert (outcomes["fails-1"]["type"], outcomes["fails-1"]["data"]["exit_code"]) == (
        "task_failed",
        3,
    )
    sent = [line.split(" INFO  ")[-1] for line in dev.lines if " INFO  sen" in line]
    assert sent == [
        "sent task_assignment hello-1",
        "sent task_assignment long-1",
        "sending task_cancellation long-1 in 3s",
        "sent task_cancellation long-1",
        "sent task_assignment fails-1",
    ]
    # Once the script has ended the server says so, and what it still does.
    ended = [line.split(" INFO  ")[-1] for line in dev.lines if "script" in line]
    assert ended == [
        "assignments script examples/assignments.jsonl ended (4 sent); still listening: the "
        "worker's messages are printed as they come, a worker may reconnect; Ctrl-C or "
        "SIGTERM stops"
    ]


async def test_a_cancel_typed_on_stdin_cancels_the_task(tmp_path: Path) -> None:
    assignment = {
        "task_id": "typed-1",
        "task": {"id": "typed-1"},
        "env_vars": {"OZ_STANDIN_PROMPT": "echo waiting; sleep 60"},
    }
    dev = await trio.lowlevel.open_process(
        [str(OZW), "dev-server", "--port", "0", "--assignments", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=HOST_ENV,
    )
    try:
        async with trio.open_nursery() as nursery:
            assert dev.stdin is not None
            assert dev.stdout is not None
            assert dev.stderr is not None
            stderr = LineReader(dev.stderr)
            url = (await stderr.next_matching("listening on")).split()[-3]
            await dev.stdin.send_all(
                b"this is not json\n" + json.dumps(assignment).encode() + b"\n"
            )
            worker = await nursery.start(
                OzwProcess(
                    ["--config", str(worker_config(tmp_path)), "--websocket-url", url, "--once"],
                    {**HOST_ENV, "WARP_API_KEY": "dev-key"},
                ).run
            )
            stdout = LineReader(dev.stdout)
            claimed = json.loads(await stdout.next_matching('"task_claimed"'))
            assert claimed["data"]["task_id"] == "typed-1"
            await worker.wait_line("typed-1.*agent stdout.*waiting")
            await dev.stdin.send_all(b"cancel typed-1\n")
            outcome = json.loads(await stdout.next_matching('"typed-1"'))
            assert outcome["type"] == "task_completed"
            assert outcome["data"]["task_state"] == "CANCELLED"
            with trio.fail_after(30):
                assert await worker.wait() == 0, worker.log
            dev.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                assert await dev.wait() == 0
            warning = await stderr.next_matching("stdin:1")
            assert "not JSON" in warning
            assert "line ignored" in warning
    finally:
        if dev.returncode is None:
            dev.kill()


def test_a_line_the_worker_would_drop_is_refused_naming_it(tmp_path: Path) -> None:
    script = tmp_path / "tasks.jsonl"
    script.write_text('# a comment\n\n{"env_vars": {"OZ_STANDIN_PROMPT": "echo hi"}}\n')
    result = run_ozw("dev-server", "--port", "0", "--assignments", str(script), cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result.stderr) == (
        f"ozw: error: {script}:3: task_assignment.task_id: required field missing; "
        "task_assignment.task: required field missing"
    )
