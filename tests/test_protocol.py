"""Wire messages (docs/protocol.md): shapes, round trips and hostile input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ozw.wire.codec import (
    REJECT_AT_CAPACITY,
    TASK_STATE_CANCELLED,
    AgentConfigSnapshot,
    AwsInference,
    Harness,
    InferenceProviders,
    InstanceShape,
    Owner,
    ProtocolError,
    ServerMessage,
    SessionSharing,
    SidecarSpec,
    Task,
    TaskAssignment,
    TaskCancellation,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskRejected,
    UnknownMessage,
    WorkerMessage,
    decode_server_message,
    decode_worker_message,
    encode_message,
    is_terminal,
    unstructure,
    unstructure_task,
)

FULL_TASK: dict[str, Any] = {
    "id": "run-123",
    "title": "Fix the flaky test",
    "task_definition": {"prompt": "make it pass", "extra": None},
    "created_at": "2026-03-10T22:39:00Z",
    "updated_at": "2026-03-10T22:39:00Z",
    "owner": {"Type": "TEAM", "Id": 7},
    "agent_config_snapshot": {
        "environment_id": "env-1",
        "base_prompt": "be careful",
        "model_id": "gpt-x",
        "profile_id": "prof-1",
        "skill_spec": "skill-a",
        "mcp_servers": {"github": {"url": "https://x", "env": None}},
        "computer_use_enabled": False,
        "idle_timeout_minutes": 15,
        "harness": {"type": "claude"},
        "harness_auth_secrets": {"anything": ["goes", 1]},
        "inference_providers": {
            "aws": {"disabled": False, "role_arn": "arn:aws:iam::1:role/r", "region": "eu-west-1"}
        },
        "session_sharing": {"public_access": "VIEWER"},
        "snapshot_disabled": True,
        "snapshot_upload_timeout_secs": 30,
        "snapshot_script_timeout_secs": 60,
    },
    "agent_conversation_id": "conv-9",
}

FULL_ASSIGNMENT: dict[str, Any] = {
    "task_id": "run-123",
    "execution_id": "exec-1",
    "task": FULL_TASK,
    "docker_image": "ubuntu:22.04",
    "sidecar_image": "warpdotdev/warp-agent:latest",
    "env_vars": {"GITHUB_ACCESS_TOKEN": "secret"},
    "additional_sidecars": [{"image": "tools:1", "mount_path": "/mnt/x", "read_write": False}],
    "additional_oz_args": ["--foo", "bar"],
    "instance_shape": {"vcpus": 2.0, "memory_gb": 4.0},
}

MINIMAL_ASSIGNMENT: dict[str, Any] = {"task_id": "run-1", "task": {"id": "run-1"}}


def frame(kind: Any, data: Any) -> str:
    return json.dumps({"type": kind, "data": data})


def assignment(**data: Any) -> str:
    return frame("task_assignment", MINIMAL_ASSIGNMENT | data)


def decode_error(text: str | bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_server_message(text)
    message = str(info.value)
    assert "\n" not in message
    assert len(message.splitlines()) == 1
    return message


# --- server → worker -----------------------------------------------------------


def test_full_assignment_decodes_every_field() -> None:
    message = decode_server_message(frame("task_assignment", FULL_ASSIGNMENT))
    assert message == TaskAssignment(
        task_id="run-123",
        execution_id="exec-1",
        task=Task(
            id="run-123",
            title="Fix the flaky test",
            task_definition={"prompt": "make it pass", "extra": None},
            created_at="2026-03-10T22:39:00Z",
            updated_at="2026-03-10T22:39:00Z",
            owner=Owner(type="TEAM", id=7),
            agent_config_snapshot=AgentConfigSnapshot(
                environment_id="env-1",
                base_prompt="be careful",
                model_id="gpt-x",
                profile_id="prof-1",
                skill_spec="skill-a",
                mcp_servers={"github": {"url": "https://x", "env": None}},
                computer_use_enabled=False,
                idle_timeout_minutes=15,
                harness=Harness(type="claude"),
                harness_auth_secrets={"anything": ["goes", 1]},
                inference_providers=InferenceProviders(
                    aws=AwsInference(
                        disabled=False, role_arn="arn:aws:iam::1:role/r", region="eu-west-1"
                    )
                ),
                session_sharing=SessionSharing(public_access="VIEWER"),
                snapshot_disabled=True,
                snapshot_upload_timeout_secs=30,
                snapshot_script_timeout_secs=60,
            ),
            agent_conversation_id="conv-9",
        ),
        docker_image="ubuntu:22.04",
        sidecar_image="warpdotdev/warp-agent:latest",
        env_vars={"GITHUB_ACCESS_TOKEN": "secret"},
        additional_sidecars=[SidecarSpec(image="tools:1", mount_path="/mnt/x", read_write=False)],
        additional_oz_args=["--foo", "bar"],
        instance_shape=InstanceShape(vcpus=2.0, memory_gb=4.0),
    )
    # The task passes through exactly as received, nulls in free-form JSON included.
    assert isinstance(message, TaskAssignment)
    assert message.task.raw == FULL_TASK
    assert unstructure_task(message.task) == FULL_TASK


@pytest.mark.parametrize("data", [FULL_ASSIGNMENT, MINIMAL_ASSIGNMENT], ids=["full", "minimal"])
def test_assignment_round_trip_and_shape(data: dict[str, Any]) -> None:
    message = decode_server_message(frame("task_assignment", data))
    assert isinstance(message, TaskAssignment)
    encoded = encode_message(message)
    assert json.loads(encoded) == {"type": "task_assignment", "data": data}
    assert decode_server_message(encoded) == message


def test_minimal_assignment_defaults() -> None:
    message = decode_server_message(frame("task_assignment", MINIMAL_ASSIGNMENT))
    assert message == TaskAssignment(task_id="run-1", task=Task(id="run-1"))
    assert isinstance(message, TaskAssignment)
    assert message.env_vars == {}
    assert message.additional_sidecars == []
    assert message.additional_oz_args == []
    assert message.instance_shape is None


def test_constructed_assignment_encodes_without_absent_fields() -> None:
    message = TaskAssignment(
        task_id="t",
        task=Task(id="t", owner=Owner(type="USER"), agent_config_snapshot=AgentConfigSnapshot()),
        additional_sidecars=[SidecarSpec("img", "/m")],
    )
    assert unstructure(message) == {
        "task_id": "t",
        "task": {"id": "t", "owner": {"Type": "USER"}, "agent_config_snapshot": {}},
        "additional_sidecars": [{"image": "img", "mount_path": "/m", "read_write": False}],
    }
    assert decode_server_message(encode_message(message)) == message


def test_cancellation_round_trip_and_shape() -> None:
    message = TaskCancellation(task_id="run-123")
    encoded = encode_message(message)
    assert json.loads(encoded) == {"type": "task_cancellation", "data": {"task_id": "run-123"}}
    assert decode_server_message(encoded) == message


def test_encoding_is_compact() -> None:
    assert encode_message(TaskCancellation("a")) == (
        '{"type":"task_cancellation","data":{"task_id":"a"}}'
    )


def test_unknown_fields_are_ignored_everywhere() -> None:
    data = {
        "task_id": "a",
        "brand_new": {"x": 1},
        "task": {
            "id": "a",
            "later": [1, 2],
            "owner": {"Type": "TEAM", "Id": 1, "Name": "x"},
            "agent_config_snapshot": {"new_flag": True, "harness": {"type": "oz", "v": 2}},
        },
        "additional_sidecars": [{"image": "i", "mount_path": "/m", "digest": "sha256:0"}],
        "instance_shape": {"vcpus": 1, "gpus": 8},
    }
    message = decode_server_message(frame("task_assignment", data))
    assert isinstance(message, TaskAssignment)
    assert message.task.owner == Owner(type="TEAM", id=1)
    assert message.additional_sidecars == [SidecarSpec("i", "/m")]
    assert message.instance_shape == InstanceShape(vcpus=1.0)
    assert message.task.raw["later"] == [1, 2]  # kept for pass-through


def test_nulls_mean_absent() -> None:
    data = {
        "task_id": "a",
        "task": {"id": "a", "title": None, "owner": None, "agent_config_snapshot": None},
        "execution_id": None,
        "docker_image": None,
        "env_vars": {"KEEP": "1", "DROP": None},
        "additional_sidecars": None,
        "additional_oz_args": None,
        "instance_shape": {"vcpus": None, "memory_gb": 2},
    }
    message = decode_server_message(frame("task_assignment", data))
    assert message == TaskAssignment(
        task_id="a",
        task=Task(id="a"),
        env_vars={"KEEP": "1"},
        instance_shape=InstanceShape(memory_gb=2.0),
    )


def test_whole_number_floats_are_integers() -> None:
    message = decode_server_message(
        assignment(task={"id": "a", "agent_config_snapshot": {"idle_timeout_minutes": 5.0}})
    )
    assert isinstance(message, TaskAssignment)
    snapshot = message.task.agent_config_snapshot
    assert snapshot is not None
    assert snapshot.idle_timeout_minutes == 5
    assert isinstance(snapshot.idle_timeout_minutes, int)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32-le"])
def test_json_in_any_standard_encoding_decodes(encoding: str) -> None:
    text = frame("task_cancellation", {"task_id": "x"}).encode(encoding)
    assert decode_server_message(text) == TaskCancellation("x")


def test_bytes_frames_decode() -> None:
    assert decode_server_message(frame("task_cancellation", {"task_id": "x"}).encode()) == (
        TaskCancellation("x")
    )


@pytest.mark.parametrize("kind", ["task_ping", "", "TASK_ASSIGNMENT", "task_claimed"])
def test_unknown_server_types_are_unknown_messages(kind: str) -> None:
    assert decode_server_message(frame(kind, {"whatever": 1})) == UnknownMessage(kind)


def test_unknown_type_without_data() -> None:
    assert decode_server_message('{"type":"hello"}') == UnknownMessage("hello")


def test_cancellation_without_data_is_missing_task_id() -> None:
    assert decode_error('{"type":"task_cancellation"}') == (
        "task_cancellation.task_id: required field missing"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "malformed JSON: Expecting property name enclosed in double quotes"),
        ("", "malformed JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"\xff\xfe\xfa", "malformed JSON: not valid UTF-8"),
        ('{"type":"task_cancellation","data":{"task_id":NaN}}', "malformed JSON: NaN is not"),
        ('{"type":"x","data":Infinity}', "malformed JSON: Infinity is not valid JSON"),
        ('{"type":"x","data":1e999}', "malformed JSON: number out of range: 1e999"),
        (
            '{"type":"x","data":' + "9" * 5000 + "}",
            "malformed JSON: number out of range: 5000 digits",
        ),
        ("[1, 2]", "frame is an array, not an object"),
        ('"task_assignment"', "frame is a string, not an object"),
        ("null", "frame is null, not an object"),
        ('{"data":{}}', "frame 'type' is null, not a string"),
        ('{"type":7,"data":{}}', "frame 'type' is a number, not a string"),
        (
            '{"type":"task_assignment","data":[]}',
            "task_assignment.data: expected an object, got an array",
        ),
        (
            '{"type":"task_cancellation","data":"x"}',
            "task_cancellation.data: expected an object, got a string",
        ),
        ('{"type":"a\\nb","data":1}', '"a\\nb".data: expected an object, got a number'),
    ],
)
def test_frame_errors(text: str | bytes, expected: str) -> None:
    assert decode_error(text).startswith(expected)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"task": {"id": "a"}}, "task_assignment.task_id: required field missing"),
        ({"task_id": "a"}, "task_assignment.task: required field missing"),
        ({"task_id": "a", "task": {}}, "task_assignment.task.id: required field missing"),
        (
            {"task_id": "a", "task": {"title": "t"}},
            "task_assignment.task.id: required field missing",
        ),
        ({"task_id": "", "task": {"id": "a"}}, "task_assignment.task_id: must not be empty"),
        (
            {"task_id": 5, "task": {"id": "a"}},
            "task_assignment.task_id: expected a string, got a number",
        ),
        ({"task_id": "a", "task": "a"}, "task_assignment.task: expected an object, got a string"),
        ({"task_id": "a", "task": [1]}, "task_assignment.task: expected an object, got an array"),
        (
            {"task_id": "a", "task": {"id": 1}},
            "task_assignment.task.id: expected a string, got a number",
        ),
        (
            {"task_id": "a", "task": {"id": "a", "owner": {"Type": 3}}},
            "task_assignment.task.owner.Type: expected a string, got a number",
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "additional_oz_args": ["--x", 3]},
            "task_assignment.additional_oz_args[1]: expected a string, got a number",
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "additional_oz_args": "--x"},
            "task_assignment.additional_oz_args: expected an array, got a string",
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "env_vars": {"A": 1}},
            'task_assignment.env_vars["A"]: expected a string, got a number',
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "env_vars": {"A\nB": True}},
            'task_assignment.env_vars["A\\nB"]: expected a string, got a boolean',
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "env_vars": ["A=1"]},
            "task_assignment.env_vars: expected an object, got an array",
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "additional_sidecars": [{"image": "i"}]},
            "task_assignment.additional_sidecars[0].mount_path: required field missing",
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "additional_sidecars": [None]},
            "task_assignment.additional_sidecars[0]: expected an object, got null",
        ),
        (
            {
                "task_id": "a",
                "task": {"id": "a"},
                "additional_sidecars": [{"image": "i", "mount_path": "/m", "read_write": "no"}],
            },
            "task_assignment.additional_sidecars[0].read_write: "
            "expected true or false, got a string",
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "instance_shape": {"vcpus": "2"}},
            "task_assignment.instance_shape.vcpus: expected a number, got a string",
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "instance_shape": {"vcpus": True}},
            "task_assignment.instance_shape.vcpus: expected a number, got a boolean",
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "instance_shape": {"memory_gb": 10**400}},
            "task_assignment.instance_shape.memory_gb: number out of range",
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "docker_image": "\ud800"},
            "task_assignment.docker_image: "
            "expected a string, got invalid Unicode (a lone surrogate)",
        ),
        (
            {"task_id": "a", "task": {"id": "a"}, "env_vars": {"\ud800": "x"}},
            'task_assignment.env_vars["\\ud800"]: '
            "expected a string, got invalid Unicode (a lone surrogate)",
        ),
    ],
)
def test_assignment_errors(data: dict[str, Any], expected: str) -> None:
    assert decode_error(frame("task_assignment", data)) == expected


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("idle_timeout_minutes", "5", "expected an integer, got a string"),
        ("idle_timeout_minutes", 1.5, "expected an integer, got a fractional number"),
        ("snapshot_disabled", "true", "expected true or false, got a string"),
        ("computer_use_enabled", 1, "expected true or false, got a number"),
        ("mcp_servers", [], "expected an object, got an array"),
        ("harness", "claude", "expected an object, got a string"),
    ],
)
def test_agent_config_snapshot_errors(field: str, value: Any, problem: str) -> None:
    data = {"task_id": "a", "task": {"id": "a", "agent_config_snapshot": {field: value}}}
    expected = f"task_assignment.task.agent_config_snapshot.{field}: {problem}"
    assert decode_error(frame("task_assignment", data)) == expected


def test_several_problems_are_listed_in_one_line() -> None:
    message = decode_error(frame("task_assignment", {"task_id": 1, "task": {"id": 2}}))
    assert message == (
        "task_assignment.task_id: expected a string, got a number; "
        "task_assignment.task.id: expected a string, got a number"
    )


def test_many_problems_are_capped() -> None:
    data = {"task_id": "a", "task": {"id": "a"}, "additional_oz_args": list(range(50))}
    message = decode_error(frame("task_assignment", data))
    assert message.count("expected a string") == 5
    assert message.endswith("; and 45 more")


def test_cancellation_task_id_type_is_checked() -> None:
    assert decode_error(frame("task_cancellation", {"task_id": ["a"]})) == (
        "task_cancellation.task_id: expected a string, got an array"
    )


@pytest.mark.parametrize("depth", [100_000, 5_000])
def test_deep_nesting_is_a_protocol_error(depth: int) -> None:
    assert decode_error("[" * depth + "]" * depth) == "malformed JSON: nested too deeply"
    nested = '{"type":"task_assignment","data":{"task_id":"a","task":{"id":"a","x":'
    assert decode_error(nested + "[" * depth) == "malformed JSON: nested too deeply"


def test_moderately_deep_free_form_json_passes_through() -> None:
    deep: Any = "leaf"
    for _ in range(200):
        deep = [deep]
    message = decode_server_message(assignment(task={"id": "a", "task_definition": {"deep": deep}}))
    assert isinstance(message, TaskAssignment)
    assert message.task.task_definition == {"deep": deep}


# --- worker → server -----------------------------------------------------------

WORKER_CASES: list[tuple[WorkerMessage, dict[str, Any]]] = [
    (
        TaskClaimed(task_id="run-1", worker_id="w-1"),
        {"type": "task_claimed", "data": {"task_id": "run-1", "worker_id": "w-1"}},
    ),
    (
        TaskRejected(task_id="run-1", reason=REJECT_AT_CAPACITY),
        {
            "type": "task_rejected",
            "data": {"task_id": "run-1", "reason": "worker at maximum concurrency"},
        },
    ),
    (
        TaskCompleted(task_id="run-1", message="done"),
        {"type": "task_completed", "data": {"task_id": "run-1", "message": "done"}},
    ),
    (
        TaskCompleted(task_id="run-1", message="cancelled", task_state=TASK_STATE_CANCELLED),
        {
            "type": "task_completed",
            "data": {"task_id": "run-1", "message": "cancelled", "task_state": "CANCELLED"},
        },
    ),
    (
        TaskFailed(task_id="run-1", message="Failed", failure_reason="container_exit", exit_code=2),
        {
            "type": "task_failed",
            "data": {
                "task_id": "run-1",
                "message": "Failed",
                "failure_reason": "container_exit",
                "exit_code": 2,
            },
        },
    ),
    (
        TaskFailed(task_id="run-1", message="Failed", failure_reason="container_exit", exit_code=0),
        {
            "type": "task_failed",
            "data": {
                "task_id": "run-1",
                "message": "Failed",
                "failure_reason": "container_exit",
                "exit_code": 0,
            },
        },
    ),
    (
        TaskFailed(task_id="run-1", message="Failed", failure_reason="image_pull"),
        {
            "type": "task_failed",
            "data": {"task_id": "run-1", "message": "Failed", "failure_reason": "image_pull"},
        },
    ),
]


@pytest.mark.parametrize(("message", "expected"), WORKER_CASES)
def test_worker_message_round_trip_and_shape(
    message: WorkerMessage, expected: dict[str, Any]
) -> None:
    encoded = encode_message(message)
    assert json.loads(encoded) == expected
    assert list(json.loads(encoded)["data"]) == list(expected["data"])  # field order too
    assert decode_worker_message(encoded) == message


def test_is_terminal() -> None:
    assert [is_terminal(m) for m, _ in WORKER_CASES] == [False, False, True, True, True, True, True]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (frame("task_started", {}), 'unknown worker message type "task_started"'),
        (frame("task_claimed", {"task_id": "a"}), "task_claimed.worker_id: required field missing"),
        (
            frame(
                "task_failed",
                {"task_id": "a", "message": "m", "failure_reason": "x", "exit_code": "1"},
            ),
            "task_failed.exit_code: expected an integer, got a string",
        ),
        (
            frame(
                "task_failed",
                {"task_id": "a", "message": "m", "failure_reason": "x", "exit_code": True},
            ),
            "task_failed.exit_code: expected an integer, got a boolean",
        ),
        (
            frame("task_completed", {"task_id": "a", "message": 1}),
            "task_completed.message: expected a string, got a number",
        ),
    ],
)
def test_worker_message_errors(text: str, expected: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_worker_message(text)
    assert str(info.value) == expected


def test_protocol_error_is_always_one_line() -> None:
    error = ProtocolError("a\nb\rc\u2028d\x00e")
    assert str(error) == "a\\nb\\rc\\u2028d\\x00e"
    assert len(str(error).splitlines()) == 1


# --- property tests ----------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)
frame_types = st.sampled_from(["task_assignment", "task_cancellation"]) | st.text()

# Objects shaped a bit like real data, so the decoder gets past the first check often.
assignment_like = st.fixed_dictionaries(
    {},
    optional={
        "task_id": st.text() | json_values,
        "task": st.fixed_dictionaries(
            {},
            optional={
                "id": st.text() | json_values,
                "owner": json_values,
                "agent_config_snapshot": st.dictionaries(
                    st.sampled_from(
                        [
                            "model_id",
                            "mcp_servers",
                            "harness",
                            "idle_timeout_minutes",
                            "computer_use_enabled",
                            "inference_providers",
                        ]
                    ),
                    json_values,
                )
                | json_values,
            },
        )
        | json_values,
        "env_vars": st.dictionaries(st.text(), st.text() | json_values) | json_values,
        "additional_sidecars": json_values,
        "additional_oz_args": st.lists(st.text()) | json_values,
        "instance_shape": json_values,
    },
)


Decoded = TypeVar("Decoded")


def decoded_or_refused(
    decode: Callable[[str | bytes], Decoded], text: str | bytes
) -> Decoded | None:
    """``decode(text)``, or None when it refuses ``text`` with a one-line ProtocolError."""
    problem = ""
    try:
        return decode(text)
    except ProtocolError as exc:
        problem = str(exc)
    assert len(problem.splitlines()) == 1
    return None


def check_server_decode(text: str | bytes) -> None:
    message = decoded_or_refused(decode_server_message, text)
    assert isinstance(message, TaskAssignment | TaskCancellation | UnknownMessage | None)
    if isinstance(message, TaskAssignment | TaskCancellation):
        # Whatever decoded also encodes, and decodes again to the same value.
        again: ServerMessage = decode_server_message(encode_message(message))
        assert again == message


def check_worker_decode(text: str | bytes) -> None:
    message = decoded_or_refused(decode_worker_message, text)
    if message is not None:
        assert decode_worker_message(encode_message(message)) == message


@given(st.text())
def test_arbitrary_text_never_raises_anything_else(text: str) -> None:
    check_server_decode(text)
    check_worker_decode(text)


@given(st.binary())
def test_arbitrary_binary_never_raises_anything_else(data: bytes) -> None:
    check_server_decode(data)
    check_worker_decode(data)


@given(json_values)
def test_arbitrary_json_frames_never_raise_anything_else(value: Any) -> None:
    check_server_decode(json.dumps(value))


@settings(max_examples=300)
@given(frame_types, json_values)
def test_arbitrary_data_never_raises_anything_else(kind: str, data: Any) -> None:
    check_server_decode(frame(kind, data))


@settings(max_examples=500)
@given(st.sampled_from(["task_assignment", "task_cancellation"]), assignment_like)
def test_assignment_shaped_data_never_raises_anything_else(kind: str, data: Any) -> None:
    check_server_decode(frame(kind, data))


@given(
    st.sampled_from(["task_claimed", "task_rejected", "task_completed", "task_failed"]) | st.text(),
    st.dictionaries(
        st.sampled_from(
            [
                "task_id",
                "worker_id",
                "reason",
                "message",
                "task_state",
                "failure_reason",
                "exit_code",
            ]
        ),
        json_values,
    ),
)
def test_arbitrary_worker_frames_never_raise_anything_else(kind: str, data: Any) -> None:
    check_worker_decode(frame(kind, data))
