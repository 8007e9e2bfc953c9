"""Log formats: human lines, JSON objects, and nothing a hostile input can forge."""

from __future__ import annotations

import io
import json
import logging
import signal
import uuid
from pathlib import Path

import trio

from ozw.telemetry.logs import TaskLog, configure_logging, escape_controls
from ozw.wire.codec import TaskFailed
from tests.support.ozw_process import STANDIN_AGENT
from tests.support.worker import API_KEY, assignment, terminal_for
from tests.test_shutdown_process import start_worker


def capture(fmt: str) -> tuple[io.StringIO, TaskLog]:
    stream = io.StringIO()
    configure_logging("debug", fmt, stream)
    return stream, TaskLog("run-1\nFAKE LINE")


def test_human_lines_escape_control_characters_from_task_ids_and_output() -> None:
    stream, log = capture("human")
    log.info("claimed")
    log.output("agent stdout", "\x1b[2Jcleared\rover")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "task=run-1\\nFAKE LINE claimed" in lines[0]
    assert lines[1].endswith("[agent stdout] \\x1b[2Jcleared\\rover")
    logging.getLogger("ozw").handlers.clear()


def test_json_lines_are_one_object_each_with_task_and_stream() -> None:
    stream, log = capture("json")
    log.output("agent stderr", "line\nwith newline")
    logging.getLogger("ozw.worker").info("plain %s", "event")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["task_id"] == "run-1\nFAKE LINE"
    assert first["stream"] == "agent stderr"
    assert first["message"] == "line\nwith newline"
    assert first["level"] == "info"
    assert second["logger"] == "ozw.worker"
    assert "task_id" not in second
    logging.getLogger("ozw").handlers.clear()


def test_escape_controls_keeps_tabs_and_printable_text() -> None:
    assert escape_controls("a\tb ü €") == "a\tb ü €"
    assert escape_controls("\x00\x7f") == "\\x00\\x7f"


async def test_a_real_worker_logs_why_a_task_failed_with_structured_fields(
    tmp_path: Path,
) -> None:
    secret = f"s3cret-{uuid.uuid4()}"
    async with trio.open_nursery() as nursery:
        args = ("--log-format", "json", "--log-level", "debug")
        server, ozw = await start_worker(nursery, tmp_path, args=args)
        with trio.fail_after(30):
            await server.wait_connected()
            task = assignment("broken", execution_id="exec-7")
            task.env_vars.update({"OZ_STANDIN_PROMPT": "exit 3", "GITHUB_ACCESS_TOKEN": secret})
            await server.send(task)
            await server.wait_for(terminal_for("broken"))
            await ozw.wait_line('"event": "finished"')
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
        nursery.cancel_scope.cancel()
    lines = [json.loads(line) for line in ozw.lines if line.startswith("{")]
    assert len(lines) == len(ozw.lines)  # every line is one JSON object
    assert all(line["worker_id"] == "sigint-worker" for line in lines)
    failed = server.messages_for("broken")[-1]
    assert isinstance(failed, TaskFailed)
    (finished,) = [line for line in lines if line.get("event") == "finished"]
    assert finished["task_id"] == "broken"
    assert finished["execution_id"] == "exec-7"
    assert finished["result"] == "failed"
    assert finished["reason"] == "agent_invocation"
    assert finished["exit_code"] == 3
    assert isinstance(finished["duration_s"], float)
    # The worker's own log gives the cause the server got.
    assert failed.message.removeprefix("Failed to execute task: ") in finished["message"]
    events = {line.get("event") for line in lines}
    assert {"claimed", "setup_started", "agent_started", "frame_in", "frame_out"} <= events
    frames = {(line["frame"], line.get("task_id")) for line in lines if "frame" in line}
    assert ("task_assignment", "broken") in frames
    assert ("task_failed", "broken") in frames
    commands = [line["message"] for line in lines if line.get("event") == "command"]
    assert any(str(STANDIN_AGENT) in command for command in commands), commands
    assert any(line["message"].startswith("setup done (") for line in lines)
    assert secret not in ozw.log
    assert API_KEY not in ozw.log
