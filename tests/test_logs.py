"""Log formats: human lines, JSON objects, and nothing a hostile input can forge."""

from __future__ import annotations

import io
import json
import logging

from ozw.logs import TaskLog, configure_logging, escape_controls


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
