"""The dev server's script lines: what each becomes, and the errors that name the line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ozw.dev.script import ScriptError, Step, parse_line, parse_script


def frame_of(line: str) -> tuple[dict[str, object], float]:
    step = parse_line(line)
    assert isinstance(step, Step)
    return json.loads(step.frame), step.after


def test_a_bare_object_is_an_assignment_and_after_is_taken_off() -> None:
    frame, after = frame_of('{"task_id": "a", "task": {"id": "a"}, "after": "1m30s"}')
    assert frame == {"type": "task_assignment", "data": {"task_id": "a", "task": {"id": "a"}}}
    assert after == 90


@pytest.mark.parametrize(
    "line",
    [
        '{"cancel": "a", "after": 2.5}',
        "cancel a",
        '{"type": "task_cancellation", "data": {"task_id": "a"}, "after": "2500ms"}',
    ],
)
def test_cancellations_in_every_spelling(line: str) -> None:
    frame, after = frame_of(line)
    assert frame == {"type": "task_cancellation", "data": {"task_id": "a"}}
    assert after == (0 if line == "cancel a" else 2.5)


@pytest.mark.parametrize("line", ["", "   ", "# a comment"])
def test_blank_lines_and_comments_are_no_step(line: str) -> None:
    assert parse_line(line) is None


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"cancel": "a", "after": -1}', "after: -1 is not a duration"),
        ('{"cancel": "a", "after": true}', "after: expected a duration"),
        ('{"cancel": "a", "after": "soon"}', "after: 'soon' is not a duration"),
        ('{"cancel": "a", "task_id": "b"}', "a cancel line has only 'cancel' and 'after'"),
        ('{"cancel": 7}', "task_cancellation.task_id"),
        ('{"task_id": "a"}', "task_assignment.task: required field missing"),
    ],
)
def test_a_bad_line_says_why(line: str, error: str) -> None:
    with pytest.raises(ScriptError, match="^" + error.replace("(", r"\(")):
        parse_line(line)


def test_script_errors_name_the_file_and_line() -> None:
    with pytest.raises(ScriptError, match=r"^tasks.jsonl:2: not JSON"):
        list(parse_script(["cancel a", "nope"], "tasks.jsonl"))


def test_the_examples_lines_are_valid_script_lines() -> None:
    examples = Path(__file__).resolve().parents[1] / "examples"
    readme_lines = re.findall(
        r"```json\n(.*?)\n```", (examples / "agent" / "README.md").read_text()
    )
    assert readme_lines
    for line in readme_lines:
        assert parse_line(line) is not None
    steps = list(parse_script((examples / "assignments.jsonl").read_text().splitlines(), "x"))
    assert [step.summary for step in steps] == [
        "task_assignment hello-1",
        "task_assignment long-1",
        "task_cancellation long-1",
        "task_assignment fails-1",
    ]
