"""Task parameters (docs/protocol.md): every rule, and its absence."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ozw.tasks.failures import FailureReason
from ozw.tasks.params import (
    DEFAULT_IMAGE,
    DEFAULT_SERVER_ROOT_URL,
    ParamSettings,
    Shape,
    Sidecar,
    TaskParams,
    base_args,
    bedrock_args,
    build_task_params,
    computer_use_enabled,
    harness_type,
    idle_on_complete_args,
    is_oz_harness,
    mcp_json,
    non_blank,
    public_share,
    resolve_server_root_url,
    select_image,
    snapshot_args,
    task_environment,
    task_sidecars,
)
from ozw.tasks.ranges import MAX_MEMORY_GB, MAX_VCPUS
from ozw.wire.codec import (
    AgentConfigSnapshot,
    Harness,
    InstanceShape,
    Owner,
    SidecarSpec,
    Task,
    TaskAssignment,
    decode_server_message,
)

ROOT = "https://oz.example"
SETTINGS = ParamSettings(server_root_url=ROOT)


def decode(data: dict[str, Any]) -> TaskAssignment:
    message = decode_server_message(json.dumps({"type": "task_assignment", "data": data}))
    assert isinstance(message, TaskAssignment)
    return message


def snap(**fields: Any) -> AgentConfigSnapshot:
    """A snapshot decoded from JSON, the way the worker gets it."""
    task = decode({"task_id": "t", "task": {"id": "t", "agent_config_snapshot": fields}}).task
    assert task.agent_config_snapshot is not None
    return task.agent_config_snapshot


def args_for(
    snapshot: dict[str, Any] | None = None,
    settings: ParamSettings = SETTINGS,
    extra: list[str] | None = None,
    owner: dict[str, Any] | None = None,
) -> list[str]:
    task: dict[str, Any] = {"id": "run-1"}
    if snapshot is not None:
        task["agent_config_snapshot"] = snapshot
    if owner is not None:
        task["owner"] = owner
    assignment = decode({"task_id": "run-1", "task": task, "additional_oz_args": extra or []})
    return list(base_args(assignment.task, assignment.additional_oz_args, settings))


def snapshot_part(snapshot: dict[str, Any]) -> list[str]:
    """Only the step-4 flags for a snapshot (between the fixed head and --idle-on-complete)."""
    return snapshot_args(snap(**snapshot))


CU = "--computer-use"
HEAD = ["agent", "run", "--task-id", "run-1", "--sandboxed", "--server-root-url", ROOT]


# --- small helpers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("   ", None), ("\t\n", None), (" a ", "a"), ("a b", "a b")],
)
def test_non_blank(value: str | None, expected: str | None) -> None:
    assert non_blank(value) == expected


@pytest.mark.parametrize(
    ("configured", "expected"),
    [(None, DEFAULT_SERVER_ROOT_URL), ("", DEFAULT_SERVER_ROOT_URL), (" ", DEFAULT_SERVER_ROOT_URL),
     (ROOT, ROOT), (f" {ROOT} ", ROOT)],
)  # fmt: skip
def test_resolve_server_root_url(configured: str | None, expected: str) -> None:
    assert resolve_server_root_url(configured) == expected


def test_default_server_root_url_is_the_documented_one() -> None:
    assert DEFAULT_SERVER_ROOT_URL == "https://app.warp.dev"


# --- environment ------------------------------------------------------------------------


def test_environment_order() -> None:
    env = task_environment("run-1", ROOT, {"B": "2", "A": "1"})
    assert list(env.items()) == [
        ("TASK_ID", "run-1"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GH_PROMPT_DISABLED", "1"),
        ("WARP_SERVER_ROOT_URL", ROOT),
        ("B", "2"),
        ("A", "1"),
    ]


@pytest.mark.parametrize("root", [None, "", "  "])
def test_environment_without_root_url(root: str | None) -> None:
    env = task_environment("run-1", root, {})
    assert list(env) == ["TASK_ID", "GIT_TERMINAL_PROMPT", "GH_PROMPT_DISABLED"]


@pytest.mark.parametrize(
    "name", ["TASK_ID", "GIT_TERMINAL_PROMPT", "GH_PROMPT_DISABLED", "WARP_SERVER_ROOT_URL"]
)
def test_env_vars_override_builtins_and_take_the_later_place(name: str) -> None:
    env = task_environment("run-1", ROOT, {"X": "x", name: "override", "Y": "y"})
    assert env[name] == "override"
    builtins = ["TASK_ID", "GIT_TERMINAL_PROMPT", "GH_PROMPT_DISABLED", "WARP_SERVER_ROOT_URL"]
    assert list(env) == [n for n in builtins if n != name] + ["X", name, "Y"]


def test_env_vars_are_verbatim() -> None:
    env = task_environment("t", None, {"EMPTY": "", "SPACES": "  a  ", "ml": "a\nb"})
    assert env["EMPTY"] == ""
    assert env["SPACES"] == "  a  "
    assert env["ml"] == "a\nb"


def test_environment_does_not_alias_the_input() -> None:
    source = {"A": "1"}
    env = task_environment("t", None, source)
    env["B"] = "2"
    assert source == {"A": "1"}


# --- image ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("docker_image", "default_image", "expected"),
    [
        ("img:1", "conf:1", ("img:1", False)),
        ("img:1", None, ("img:1", False)),
        (" img:1 ", None, ("img:1", False)),
        (None, "conf:1", ("conf:1", True)),
        ("", "conf:1", ("conf:1", True)),
        ("  ", "conf:1", ("conf:1", True)),
        (None, None, (DEFAULT_IMAGE, True)),
        (None, " ", (DEFAULT_IMAGE, True)),
        ("", "", (DEFAULT_IMAGE, True)),
    ],
)
def test_select_image(
    docker_image: str | None, default_image: str | None, expected: tuple[str, bool]
) -> None:
    assert select_image(docker_image, default_image) == expected


def test_default_image_is_ubuntu() -> None:
    assert DEFAULT_IMAGE == "ubuntu:22.04"


# --- sidecars ---------------------------------------------------------------------------


def test_sidecars_agent_first_then_additional_in_order() -> None:
    additional = [SidecarSpec("b:1", "/mnt/b", read_write=True), SidecarSpec("a:1", "/mnt/a")]
    assert task_sidecars("agent:1", additional) == (
        Sidecar("agent:1", "/agent", read_write=False),
        Sidecar("b:1", "/mnt/b", read_write=True),
        Sidecar("a:1", "/mnt/a", read_write=False),
    )


@pytest.mark.parametrize("sidecar_image", [None, "", "   "])
def test_no_agent_sidecar(sidecar_image: str | None) -> None:
    assert task_sidecars(sidecar_image, [SidecarSpec("a:1", "/a")]) == (Sidecar("a:1", "/a"),)
    assert task_sidecars(sidecar_image, []) == ()


def test_agent_sidecar_is_trimmed() -> None:
    assert task_sidecars(" agent:1 ", []) == (Sidecar("agent:1", "/agent"),)


# --- harness and computer use -------------------------------------------------------------


@pytest.mark.parametrize(
    ("harness", "expected"),
    [
        (None, None),
        ({}, None),
        ({"type": None}, None),
        ({"type": ""}, None),
        ({"type": "  "}, None),
        ({"type": "oz"}, "oz"),
        ({"type": " claude "}, "claude"),
        ({"type": "codex"}, "codex"),
    ],
)
def test_harness_type(harness: dict[str, Any] | None, expected: str | None) -> None:
    assert harness_type(snap(harness=harness)) == expected


def test_harness_type_without_snapshot() -> None:
    assert harness_type(None) is None


@pytest.mark.parametrize(
    ("harness", "expected"),
    [(None, True), ("oz", True), ("claude", False), ("codex", False), ("OZ", False)],
)
def test_is_oz_harness(harness: str | None, expected: bool) -> None:
    assert is_oz_harness(harness) is expected


@pytest.mark.parametrize(
    ("harness", "explicit", "expected"),
    [
        (None, None, True),
        ("oz", None, True),
        ("", None, True),
        ("claude", None, False),
        (None, False, False),
        ("oz", False, False),
        ("claude", True, True),
        ("claude", False, False),
        (None, True, True),
    ],
)
def test_computer_use(harness: str | None, explicit: bool | None, expected: bool) -> None:
    snapshot = snap(harness={"type": harness}, computer_use_enabled=explicit)
    assert computer_use_enabled(snapshot) is expected
    flag = "--computer-use" if expected else "--no-computer-use"
    args = snapshot_args(snapshot)
    assert flag in args
    assert ({"--computer-use", "--no-computer-use"} - {flag}).isdisjoint(args)


# --- the snapshot flags ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        ({}, [CU]),
        # --model: Oz harness only, trimmed, blank is absent.
        ({"model_id": "m1"}, ["--model", "m1", CU]),
        ({"model_id": " m1 "}, ["--model", "m1", CU]),
        ({"model_id": "  "}, [CU]),
        ({"model_id": ""}, [CU]),
        ({"model_id": "m1", "harness": {"type": ""}}, ["--model", "m1", CU]),
        (
            {"model_id": "m1", "harness": {"type": "oz"}},
            ["--model", "m1", CU, "--harness", "oz"],
        ),
        (
            {"model_id": "m1", "harness": {"type": "claude"}},
            ["--no-computer-use", "--harness", "claude"],
        ),
        # --profile and --skill.
        ({"profile_id": "p"}, ["--profile", "p", CU]),
        ({"profile_id": " p "}, ["--profile", "p", CU]),
        ({"profile_id": " "}, [CU]),
        ({"skill_spec": "s/k"}, ["--skill", "s/k", CU]),
        ({"skill_spec": "\t"}, [CU]),
        # --mcp: compact JSON when non-empty.
        ({"mcp_servers": {}}, [CU]),
        (
            {"mcp_servers": {"gh": {"url": "https://x", "args": [1, None, True]}}},
            ["--mcp", '{"gh":{"args":[1,null,true],"url":"https://x"}}', CU],
        ),
        # Public sharing.
        ({"session_sharing": {"public_access": "VIEWER"}}, [CU, "--share", "public:view"]),
        ({"session_sharing": {"public_access": "EDITOR"}}, [CU, "--share", "public:edit"]),
        ({"session_sharing": {"public_access": " EDITOR "}}, [CU, "--share", "public:edit"]),
        ({"session_sharing": {"public_access": "NONE"}}, [CU]),
        ({"session_sharing": {"public_access": "viewer"}}, [CU]),
        ({"session_sharing": {"public_access": ""}}, [CU]),
        ({"session_sharing": {}}, [CU]),
        # Snapshots.
        ({"snapshot_disabled": True}, [CU, "--no-snapshot"]),
        ({"snapshot_disabled": False}, [CU]),
        ({"snapshot_upload_timeout_secs": 30}, [CU, "--snapshot-upload-timeout", "30s"]),
        ({"snapshot_upload_timeout_secs": 0}, [CU]),
        ({"snapshot_upload_timeout_secs": -5}, [CU]),
        ({"snapshot_script_timeout_secs": 1}, [CU, "--snapshot-script-timeout", "1s"]),
        ({"snapshot_script_timeout_secs": 0}, [CU]),
        ({"snapshot_script_timeout_secs": -1}, [CU]),
    ],
)  # fmt: skip
def test_snapshot_flags(snapshot: dict[str, Any], expected: list[str]) -> None:
    assert snapshot_part(snapshot) == expected


@pytest.mark.parametrize(
    ("aws", "expected"),
    [
        (None, []),
        ({}, []),
        ({"disabled": True, "role_arn": "arn:r", "region": "us-east-1"}, []),
        ({"disabled": False}, []),
        ({"role_arn": "  "}, []),
        ({"role_arn": "arn:r"}, ["--bedrock-inference-role", "arn:r"]),
        ({"role_arn": " arn:r ", "region": " "}, ["--bedrock-inference-role", "arn:r"]),
        (
            {"disabled": False, "role_arn": "arn:r", "region": " us-east-1 "},
            ["--bedrock-inference-role", "arn:r", "--bedrock-role-region", "us-east-1"],
        ),
        ({"region": "us-east-1"}, []),
    ],
)
def test_bedrock(aws: dict[str, Any] | None, expected: list[str]) -> None:
    snapshot = snap(inference_providers={"aws": aws})
    assert bedrock_args(snapshot) == expected
    assert snapshot_args(snapshot) == ["--computer-use", *expected]


def test_bedrock_without_providers() -> None:
    assert bedrock_args(snap()) == []
    assert bedrock_args(snap(inference_providers={})) == []


@pytest.mark.parametrize(
    ("sharing", "expected"),
    [
        (None, None),
        ({}, None),
        ({"public_access": "VIEWER"}, "public:view"),
        ({"public_access": "EDITOR"}, "public:edit"),
        ({"public_access": "OWNER"}, None),
    ],
)
def test_public_share(sharing: dict[str, Any] | None, expected: str | None) -> None:
    assert public_share(snap(session_sharing=sharing)) == expected


def test_mcp_json_is_compact_and_sorted() -> None:
    assert mcp_json(None) is None
    assert mcp_json({}) is None
    assert mcp_json({"b": 1, "a": {"y": [1, 2], "x": 0}}) == '{"a":{"x":0,"y":[1,2]},"b":1}'
    assert mcp_json({"name": "caf\u00e9"}) == '{"name":"caf\\u00e9"}'


def test_every_snapshot_flag_in_order() -> None:
    snapshot = {
        "model_id": "m",
        "profile_id": "p",
        "skill_spec": "s",
        "mcp_servers": {"a": 1},
        "computer_use_enabled": True,
        "inference_providers": {"aws": {"role_arn": "arn", "region": "r"}},
        "harness": {"type": "oz"},
        "session_sharing": {"public_access": "EDITOR"},
        "snapshot_disabled": True,
        "snapshot_upload_timeout_secs": 10,
        "snapshot_script_timeout_secs": 20,
    }
    assert snapshot_part(snapshot) == [
        "--model", "m",
        "--profile", "p",
        "--skill", "s",
        "--mcp", '{"a":1}',
        "--computer-use",
        "--bedrock-inference-role", "arn", "--bedrock-role-region", "r",
        "--harness", "oz",
        "--share", "public:edit",
        "--no-snapshot",
        "--snapshot-upload-timeout", "10s",
        "--snapshot-script-timeout", "20s",
    ]  # fmt: skip


# --- idle-on-complete ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "setting", "expected"),
    [
        (15, None, ["--idle-on-complete", "15m"]),
        (15, "45m", ["--idle-on-complete", "15m"]),
        (0, "45m", ["--idle-on-complete", "45m"]),
        (-3, "45m", ["--idle-on-complete", "45m"]),
        (None, "45m", ["--idle-on-complete", "45m"]),
        (None, " 2h ", ["--idle-on-complete", " 2h "]),
        (0, None, ["--idle-on-complete"]),
        (None, None, ["--idle-on-complete"]),
        (None, "", ["--idle-on-complete"]),
        (None, "  ", ["--idle-on-complete"]),
    ],
)
def test_idle_on_complete(minutes: int | None, setting: str | None, expected: list[str]) -> None:
    assert idle_on_complete_args(snap(idle_timeout_minutes=minutes), setting) == expected
    settings = ParamSettings(server_root_url=ROOT, idle_on_complete=setting)
    assert args_for({"idle_timeout_minutes": minutes}, settings)[-len(expected) :] == expected


def test_idle_on_complete_without_snapshot() -> None:
    assert idle_on_complete_args(None, None) == ["--idle-on-complete"]
    assert idle_on_complete_args(None, "5m") == ["--idle-on-complete", "5m"]


# --- whole argument lists -------------------------------------------------------------------


def test_minimal_args_without_snapshot() -> None:
    assert args_for() == [*HEAD, "--idle-on-complete"]


def test_minimal_args_with_empty_snapshot() -> None:
    assert args_for({}) == [*HEAD, "--computer-use", "--idle-on-complete"]


@pytest.mark.parametrize(
    ("owner", "shared"),
    [
        ({"Type": "TEAM", "Id": 7}, True),
        ({"Type": "USER", "Id": 7}, False),
        ({"Type": "team"}, False),
        ({}, False),
        (None, False),
    ],
)
def test_team_share(owner: dict[str, Any] | None, shared: bool) -> None:
    expected = ["agent", "run", *(["--share", "team:edit"] if shared else []), *HEAD[2:]]
    assert args_for(owner=owner) == [*expected, "--idle-on-complete"]


def test_team_share_and_public_share_both_appear() -> None:
    args = args_for({"session_sharing": {"public_access": "VIEWER"}}, owner={"Type": "TEAM"})
    assert args == [
        "agent", "run", "--share", "team:edit", *HEAD[2:],
        "--computer-use", "--share", "public:view", "--idle-on-complete",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("environment_id", "expected"),
    [("env-1", ["--environment", "env-1"]), (" env-1 ", ["--environment", "env-1"]),
     ("", []), ("  ", []), (None, [])],
)  # fmt: skip
def test_environment_flag(environment_id: str | None, expected: list[str]) -> None:
    args = args_for({"environment_id": environment_id}, extra=["--x"])
    assert args == [*HEAD, "--computer-use", *expected, "--x", "--idle-on-complete"]


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--foo", "bar"],
        ["--model", "other", "--idle-on-complete", "1m"],
        ["", " ", "  spaced  ", "a b", "-", "--", "--x=y", "ünï", "$(rm -rf /)"],
    ],
)
def test_additional_args_verbatim_after_environment(extra: list[str]) -> None:
    args = args_for({"environment_id": "env"}, extra=extra)
    assert args == [
        *HEAD, "--computer-use", "--environment", "env", *extra, "--idle-on-complete",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "expected"),
    [("wss://share", ["--session-sharing-server-url", "wss://share"]),
     (" wss://share ", ["--session-sharing-server-url", "wss://share"]),
     ("", []), (" ", []), (None, [])],
)  # fmt: skip
def test_session_sharing_url_is_last(url: str | None, expected: list[str]) -> None:
    settings = ParamSettings(
        server_root_url=ROOT, idle_on_complete="9m", session_sharing_server_url=url
    )
    assert args_for(settings=settings) == [*HEAD, "--idle-on-complete", "9m", *expected]


@pytest.mark.parametrize("root", [None, "", "   "])
def test_server_root_url_defaults(root: str | None) -> None:
    args = args_for(settings=ParamSettings(server_root_url=root))
    assert args[args.index("--server-root-url") + 1] == "https://app.warp.dev"


def test_full_example_byte_for_byte() -> None:
    assignment = decode(
        {
            "task_id": "run-123",
            "execution_id": "exec-1",
            "task": {
                "id": "run-123",
                "title": "Fix the flaky test",
                "owner": {"Type": "TEAM", "Id": 7},
                "agent_config_snapshot": {
                    "environment_id": " env-42 ",
                    "base_prompt": "ignored by the args",
                    "model_id": "claude-4",
                    "profile_id": "prof",
                    "skill_spec": "  ",
                    "mcp_servers": {"linear": {"url": "https://mcp.linear.app", "headers": {}}},
                    "idle_timeout_minutes": 0,
                    "harness": {"type": "oz"},
                    "inference_providers": {
                        "aws": {"disabled": False, "role_arn": "arn:aws:iam::1:role/b"}
                    },
                    "session_sharing": {"public_access": "VIEWER"},
                    "snapshot_disabled": False,
                    "snapshot_upload_timeout_secs": 120,
                    "snapshot_script_timeout_secs": 0,
                },
            },
            "docker_image": "ghcr.io/acme/dev:3",
            "sidecar_image": "warpdotdev/warp-agent:latest",
            "env_vars": {"GITHUB_ACCESS_TOKEN": "tok"},
            "additional_sidecars": [{"image": "tools:1", "mount_path": "/mnt/x"}],
            "additional_oz_args": ["--foo", "bar"],
            "instance_shape": {"vcpus": 2, "memory_gb": 4},
        }
    )
    settings = ParamSettings(
        server_root_url="https://app.warp.dev",
        default_image="unused:1",
        idle_on_complete="30m",
        session_sharing_server_url="wss://sessions.warp.dev",
    )
    params = build_task_params(assignment, settings)
    assert list(params.base_args) == [
        "agent", "run",
        "--share", "team:edit",
        "--task-id", "run-123",
        "--sandboxed",
        "--server-root-url", "https://app.warp.dev",
        "--model", "claude-4",
        "--profile", "prof",
        "--mcp", '{"linear":{"headers":{},"url":"https://mcp.linear.app"}}',
        "--computer-use",
        "--bedrock-inference-role", "arn:aws:iam::1:role/b",
        "--harness", "oz",
        "--share", "public:view",
        "--snapshot-upload-timeout", "120s",
        "--environment", "env-42",
        "--foo", "bar",
        "--idle-on-complete", "30m",
        "--session-sharing-server-url", "wss://sessions.warp.dev",
    ]  # fmt: skip
    assert params == TaskParams(
        task_id="run-123",
        run_id="run-123",
        execution_id="exec-1",
        env={
            "TASK_ID": "run-123",
            "GIT_TERMINAL_PROMPT": "0",
            "GH_PROMPT_DISABLED": "1",
            "WARP_SERVER_ROOT_URL": "https://app.warp.dev",
            "GITHUB_ACCESS_TOKEN": "tok",
        },
        image="ghcr.io/acme/dev:3",
        sidecars=(
            Sidecar("warpdotdev/warp-agent:latest", "/agent", read_write=False),
            Sidecar("tools:1", "/mnt/x", read_write=False),
        ),
        base_args=params.base_args,
        harness="oz",
        environment_id="env-42",
        server_root_url="https://app.warp.dev",
        task=assignment.task.raw,
        instance_shape=Shape(vcpus=2.0, memory_gb=4.0),
        image_defaulted=False,
    )
    assert params.task is assignment.task.raw
    assert params.image_warning is None


def test_third_party_full_args() -> None:
    args = args_for(
        {"model_id": "gpt", "harness": {"type": " codex "}, "idle_timeout_minutes": 7},
        extra=["--verbose"],
    )
    assert args == [
        *HEAD, "--no-computer-use", "--harness", "codex", "--verbose", "--idle-on-complete", "7m",
    ]  # fmt: skip


# --- build_task_params --------------------------------------------------------------------


def test_build_minimal() -> None:
    assignment = decode({"task_id": "tid", "task": {"id": "rid"}})
    params = build_task_params(assignment, ParamSettings(server_root_url=None))
    assert params == TaskParams(
        task_id="tid",
        run_id="rid",
        execution_id=None,
        env={
            "TASK_ID": "rid",
            "GIT_TERMINAL_PROMPT": "0",
            "GH_PROMPT_DISABLED": "1",
            "WARP_SERVER_ROOT_URL": DEFAULT_SERVER_ROOT_URL,
        },
        image=DEFAULT_IMAGE,
        sidecars=(),
        base_args=(
            "agent", "run", "--task-id", "rid", "--sandboxed",
            "--server-root-url", DEFAULT_SERVER_ROOT_URL, "--idle-on-complete",
        ),
        harness=None,
        environment_id=None,
        server_root_url=DEFAULT_SERVER_ROOT_URL,
        task={"id": "rid"},
        instance_shape=None,
        image_defaulted=True,
    )  # fmt: skip
    assert params.image_warning is None  # no environment named: nothing to warn about


def test_env_vars_override_task_id_in_params() -> None:
    assignment = decode({"task_id": "t", "task": {"id": "t"}, "env_vars": {"TASK_ID": "mine"}})
    env = build_task_params(assignment, SETTINGS).env
    assert list(env.items())[-1] == ("TASK_ID", "mine")


@pytest.mark.parametrize(
    ("docker_image", "default_image", "environment_id", "image", "warn"),
    [
        ("img:1", None, "env", "img:1", False),
        (None, "conf:1", "env", "conf:1", True),
        (None, None, "env", DEFAULT_IMAGE, True),
        ("  ", None, "env", DEFAULT_IMAGE, True),
        (None, None, " ", DEFAULT_IMAGE, False),
        (None, None, None, DEFAULT_IMAGE, False),
    ],
)
def test_image_warning(
    docker_image: str | None,
    default_image: str | None,
    environment_id: str | None,
    image: str,
    warn: bool,
) -> None:
    assignment = decode(
        {
            "task_id": "t",
            "task": {"id": "t", "agent_config_snapshot": {"environment_id": environment_id}},
            "docker_image": docker_image,
        }
    )
    params = build_task_params(
        assignment, ParamSettings(server_root_url=ROOT, default_image=default_image)
    )
    assert params.image == image
    assert params.image_defaulted is (docker_image is None or not docker_image.strip())
    if warn:
        assert params.image_warning == (
            f"task names environment 'env' but no docker_image arrived; using {image!r}"
        )
    else:
        assert params.image_warning is None


@pytest.mark.parametrize(
    ("harness", "expected"),
    [(None, None), ({"type": ""}, None), ({"type": " claude "}, "claude"), ({"type": "oz"}, "oz")],
)
def test_params_harness(harness: dict[str, Any] | None, expected: str | None) -> None:
    assignment = decode(
        {"task_id": "t", "task": {"id": "t", "agent_config_snapshot": {"harness": harness}}}
    )
    assert build_task_params(assignment, SETTINGS).harness == expected


def test_task_passes_through_raw() -> None:
    task = {"id": "t", "unknown": {"kept": None}, "owner": {"Type": "USER", "Id": "u"}}
    assignment = decode({"task_id": "t", "task": task})
    assert build_task_params(assignment, SETTINGS).task == task


def test_constructed_task_is_unstructured() -> None:
    assignment = TaskAssignment(
        task_id="t",
        task=Task(
            id="t",
            owner=Owner(type="TEAM", id=1),
            agent_config_snapshot=AgentConfigSnapshot(harness=Harness("claude")),
        ),
        instance_shape=InstanceShape(vcpus=1.5),
    )
    params = build_task_params(assignment, SETTINGS)
    assert params.task == {
        "id": "t",
        "owner": {"Type": "TEAM", "Id": 1},
        "agent_config_snapshot": {"harness": {"type": "claude"}},
    }
    assert params.instance_shape == Shape(vcpus=1.5)
    assert params.base_args[:4] == ("agent", "run", "--share", "team:edit")
    assert params.harness == "claude"


def test_run_id_and_task_id_come_from_their_own_fields() -> None:
    assignment = decode({"task_id": "assignment-id", "task": {"id": "task-id"}})
    params = build_task_params(assignment, SETTINGS)
    assert params.task_id == "assignment-id"
    assert params.run_id == "task-id"
    assert params.env["TASK_ID"] == "task-id"
    assert params.base_args[2:4] == ("--task-id", "task-id")


# --- values out of range: bad input, refused with a reason ------------------------------

HOSTILE_SIZES = [-1, -0.5, 1e308, 1e19, float("inf"), float("-inf"), float("nan")]
HOSTILE_COUNTS = [-1, 2**63, 10**30, 153_722_868 * 60]


def refusal_of(data: dict[str, Any], settings: ParamSettings = SETTINGS) -> tuple[str, str]:
    refusal = build_task_params(decode({"task_id": "t", **data}), settings).refusal
    assert refusal is not None, data
    return refusal.reason.value, refusal.cause


@pytest.mark.parametrize("field", ["vcpus", "memory_gb"])
@pytest.mark.parametrize("value", HOSTILE_SIZES, ids=repr)
def test_every_size_out_of_range_is_refused(field: str, value: float) -> None:
    # Built directly: JSON has no NaN or infinity, but a decoder's float may be one.
    assignment = attrs.evolve(
        decode({"task_id": "t", "task": {"id": "t"}}),
        instance_shape=InstanceShape(**{field: value}),
    )
    refusal = build_task_params(assignment, SETTINGS).refusal
    assert refusal is not None
    assert refusal.reason is FailureReason.CONTAINER_CREATE
    assert refusal.cause.startswith(f"the assignment is not valid: instance_shape.{field}: ")
    kube = ParamSettings(server_root_url=ROOT, shape_failure=FailureReason.JOB_CREATE)
    kube_refusal = build_task_params(assignment, kube).refusal
    assert kube_refusal is not None
    assert kube_refusal.reason is FailureReason.JOB_CREATE


def test_the_campaigns_absurd_shape_is_refused_from_the_wire() -> None:
    assignment = decode(
        {
            "task_id": "t",
            "task": {"id": "t"},
            "instance_shape": {"vcpus": 1e308, "memory_gb": 1e308},
        }
    )
    refusal = build_task_params(assignment, SETTINGS).refusal
    assert refusal is not None
    assert refusal.cause == (
        f"the assignment is not valid: instance_shape.vcpus: 1e+308 is not a number from 0 to "
        f"{MAX_VCPUS}; instance_shape.memory_gb: 1e+308 is not a number from 0 to {MAX_MEMORY_GB}"
    )


@pytest.mark.parametrize(
    "field",
    ["idle_timeout_minutes", "snapshot_upload_timeout_secs", "snapshot_script_timeout_secs"],
)
@pytest.mark.parametrize("value", HOSTILE_COUNTS, ids=repr)
def test_every_count_out_of_range_is_refused(field: str, value: int) -> None:
    if field == "idle_timeout_minutes" and value == HOSTILE_COUNTS[-1]:
        value //= 60  # one minute past what a Go duration holds
    reason, cause = refusal_of({"task": {"id": "t", "agent_config_snapshot": {field: value}}})
    assert reason == "agent_invocation"
    assert f"agent_config_snapshot.{field}: {value} is not a whole number" in cause


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "is empty"),
        ("  ", "is empty"),
        ("etc", "is not absolute"),
        ("../etc", "is not absolute"),
        ("/x/../../etc", "climbs with '..'"),
        ("/x/..", "climbs with '..'"),
        ("/", "is the root directory"),
        ("//./", "is the root directory"),
        ("/a:b", "holds ':' ',' or NUL"),
        ("/a,b", "holds ':' ',' or NUL"),
        ("/a\0b", "holds ':' ',' or NUL"),
    ],
)
def test_every_bad_mount_path_is_refused(path: str, problem: str) -> None:
    sidecars = [{"image": "a", "mount_path": "/ok"}, {"image": "b", "mount_path": path}]
    reason, cause = refusal_of({"task": {"id": "t"}, "additional_sidecars": sidecars})
    assert reason == "sidecar_prep"
    assert cause == (
        f"the assignment is not valid: additional_sidecars[1].mount_path {path!r} {problem}"
    )


def test_every_problem_is_named_and_the_first_gives_the_reason() -> None:
    reason, cause = refusal_of(
        {
            "task": {"id": "t", "agent_config_snapshot": {"idle_timeout_minutes": -5}},
            "instance_shape": {"vcpus": 1e308, "memory_gb": -1},
            "additional_sidecars": [{"image": "a", "mount_path": "../etc"}],
        }
    )
    assert reason == "container_create"
    assert cause.count(";") == 3, cause


@pytest.mark.parametrize(
    "data",
    [
        {"instance_shape": {"vcpus": 0, "memory_gb": 0}},
        {"instance_shape": {"vcpus": 0.25, "memory_gb": 0.5}},
        {"instance_shape": {"vcpus": MAX_VCPUS, "memory_gb": MAX_MEMORY_GB}},
        {"additional_sidecars": [{"image": "a", "mount_path": "/a//b/./"}]},
    ],
)
def test_values_in_range_pass(data: dict[str, Any]) -> None:
    params = build_task_params(decode({"task_id": "t", "task": {"id": "t"}, **data}), SETTINGS)
    assert params.refusal is None


def test_mount_paths_are_passed_on_normalised() -> None:
    sidecars = [{"image": "a", "mount_path": "/a//b/./"}]
    assignment = decode({"task_id": "t", "task": {"id": "t"}, "additional_sidecars": sidecars})
    assert build_task_params(assignment, SETTINGS).sidecars == (Sidecar("a", "/a/b"),)


NUMBERS = st.none() | st.integers() | st.floats()
"""Anything a decoder's number may be, NaN and the infinities included."""


@given(
    vcpus=NUMBERS,
    memory_gb=NUMBERS,
    minutes=st.none() | st.integers(),
    upload=st.none() | st.integers(),
    mount=st.text(alphabet="/.:,\0ab ", max_size=12),
)
@settings(max_examples=300, deadline=None)
def test_no_value_makes_the_params_layer_raise(
    vcpus: float | None,
    memory_gb: float | None,
    minutes: int | None,
    upload: int | None,
    mount: str,
) -> None:
    snapshot = AgentConfigSnapshot(
        idle_timeout_minutes=minutes, snapshot_upload_timeout_secs=upload
    )
    assignment = attrs.evolve(
        decode({"task_id": "t", "task": {"id": "t"}}),
        task=Task(id="t", agent_config_snapshot=snapshot),
        instance_shape=InstanceShape(vcpus=vcpus, memory_gb=memory_gb),
        additional_sidecars=[SidecarSpec(image="a", mount_path=mount)],
    )
    params = build_task_params(assignment, SETTINGS)
    if params.refusal is None:
        # What passes is what an engine can take: finite, in range, a plain mount path.
        for value, limit in ((vcpus, MAX_VCPUS), (memory_gb, MAX_MEMORY_GB)):
            assert value is None or 0 <= value <= limit
        (sidecar,) = params.sidecars
        assert sidecar.mount_path.startswith("/")
        assert ".." not in sidecar.mount_path.split("/")
    else:
        assert params.refusal.cause.startswith("the assignment is not valid: ")
