"""Task parameters: the backend-neutral value the worker builds from an assignment.

docs/protocol.md is the rulebook. Backends never read the raw assignment; they get a
:class:`TaskParams`. Everything here is a pure function so each rule can be tested
exhaustively without I/O; :func:`build_task_params` only wires them together.

Choices where docs/protocol.md is silent:

- "Blank" means empty after :meth:`str.strip`; a blank string counts as absent
  everywhere, and values that pass are used trimmed (image names, snapshot values,
  the sidecar image). ``additional_oz_args`` and ``env_vars`` are the exception:
  they are passed verbatim, as the protocol says.
- Harness and share-level names are compared exactly (after trimming): ``"oz"``,
  ``"VIEWER"``, ``"EDITOR"``; the server spells them so.
- With no server root URL configured the documented default
  (:data:`DEFAULT_SERVER_ROOT_URL`) is used for the argument, the environment and
  the params alike, so the agent always knows where to report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.tasks.ranges import assignment_refusal, normalise_mount_path
from ozw.wire.codec import (
    AgentConfigSnapshot,
    InstanceShape,
    SidecarSpec,
    Task,
    TaskAssignment,
    unstructure_task,
)

DEFAULT_IMAGE: Final = "ubuntu:22.04"
DEFAULT_SERVER_ROOT_URL: Final = "https://app.warp.dev"
AGENT_SIDECAR_MOUNT: Final = "/agent"
AGENT_SIDECAR: Final = "warpdotdev/warp-agent:latest"
"""The agent sidecar image Oz names in its assignments today (the server decides)."""
OZ_HARNESS: Final = "oz"

_PUBLIC_SHARE: Final = {"VIEWER": "public:view", "EDITOR": "public:edit"}


@attrs.frozen
class Sidecar:
    """An image whose filesystem is mounted into the task at ``mount_path``."""

    image: str
    mount_path: str
    read_write: bool = False


@attrs.frozen
class Shape:
    """The machine size the task asked for; an axis is None when it was not given."""

    vcpus: float | None = None
    memory_gb: float | None = None


@attrs.frozen
class ParamSettings:
    """The worker settings that shape task parameters."""

    server_root_url: str | None
    default_image: str | None = None
    idle_on_complete: str | None = None
    session_sharing_server_url: str | None = None
    shape_failure: FailureReason = FailureReason.CONTAINER_CREATE
    """The reason an ``instance_shape`` out of range fails with on this backend."""


@attrs.frozen
class TaskParams:
    """Everything a backend needs to run one task (docs/protocol.md).

    ``env`` is ordered and already merged (later entries of the same name won);
    backends add their own configured ``environment`` on top.

    ``image_defaulted`` is true when the assignment carried no ``docker_image`` and
    ``image`` came from configuration or the built-in default; together with
    ``environment_id`` it tells the worker to warn (see :attr:`image_warning`).
    """

    task_id: str
    run_id: str
    execution_id: str | None
    env: dict[str, str]
    image: str
    sidecars: tuple[Sidecar, ...]
    base_args: tuple[str, ...]
    harness: str | None
    environment_id: str | None
    server_root_url: str | None
    task: dict[str, Any] = attrs.field(repr=False)
    instance_shape: Shape | None = None
    image_defaulted: bool = False
    refusal: TaskFailure | None = attrs.field(default=None, eq=False)
    """Why the assignment cannot run (a value out of range): the task fails with it
    before any backend work, so bad input is never an internal error."""

    @property
    def image_warning(self) -> str | None:
        """The warning to log when the task names an environment but no image arrived.

        An environment is normally tied to an image; running it on a default image
        usually means the server-side environment lost its image, which the
        operator wants to hear about even though the task still runs.
        """
        if not (self.image_defaulted and self.environment_id):
            return None
        return (
            f"task names environment {self.environment_id!r} but no docker_image "
            f"arrived; using {self.image!r}"
        )


# --- small pure rules ------------------------------------------------------------


def non_blank(value: str | None) -> str | None:
    """``value`` trimmed, or None when it is absent or only whitespace."""
    if value is None:
        return None
    trimmed = value.strip()
    return trimmed or None


def resolve_server_root_url(configured: str | None) -> str:
    """The configured server root URL, or the documented default when there is none.

    The agent CLI needs ``--server-root-url`` with a value; an absent setting means
    "the default server", not "no server".
    """
    return non_blank(configured) or DEFAULT_SERVER_ROOT_URL


def task_environment(
    task_id: str, server_root_url: str | None, env_vars: Mapping[str, str]
) -> dict[str, str]:
    """The task environment, in docs/protocol.md order.

    ``TASK_ID``, ``GIT_TERMINAL_PROMPT=0``, ``GH_PROMPT_DISABLED=1``,
    ``WARP_SERVER_ROOT_URL`` (only when ``server_root_url`` is non-blank), then every
    ``env_vars`` entry verbatim. When a name repeats, the later entry wins *and takes
    the later position*: the result is the list with earlier duplicates removed, so
    iterating it is equivalent to applying the entries in order.
    """
    entries: list[tuple[str, str]] = [
        ("TASK_ID", task_id),
        # Non-interactive git and gh: a credential prompt would hang the agent.
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GH_PROMPT_DISABLED", "1"),
    ]
    if server_root_url is not None and server_root_url.strip():
        entries.append(("WARP_SERVER_ROOT_URL", server_root_url))
    entries.extend(env_vars.items())
    env: dict[str, str] = {}
    for name, value in entries:
        env.pop(name, None)  # re-insert so the winner sits where it was given
        env[name] = value
    return env


def select_image(docker_image: str | None, default_image: str | None) -> tuple[str, bool]:
    """The image to run and whether it was defaulted (no usable ``docker_image``).

    Precedence: the assignment's ``docker_image``, the configured ``default_image``,
    :data:`DEFAULT_IMAGE`. Blank values count as absent.
    """
    given = non_blank(docker_image)
    if given is not None:
        return given, False
    return non_blank(default_image) or DEFAULT_IMAGE, True


def task_sidecars(
    sidecar_image: str | None, additional: Sequence[SidecarSpec]
) -> tuple[Sidecar, ...]:
    """The agent sidecar (read-only at ``/agent``) first when given, then the others in order."""
    sidecars: list[Sidecar] = []
    agent = non_blank(sidecar_image)
    if agent is not None:
        sidecars.append(Sidecar(agent, AGENT_SIDECAR_MOUNT, read_write=False))
    sidecars.extend(
        Sidecar(s.image, normalise_mount_path(s.mount_path), s.read_write) for s in additional
    )
    return tuple(sidecars)


def harness_type(snapshot: AgentConfigSnapshot | None) -> str | None:
    """The snapshot's harness type, trimmed; None when absent or blank."""
    if snapshot is None or snapshot.harness is None:
        return None
    return non_blank(snapshot.harness.type)


def is_oz_harness(harness: str | None) -> bool:
    """Whether a (trimmed) harness type means the Oz harness: absent, blank or ``oz``."""
    return harness is None or harness == OZ_HARNESS


def computer_use_enabled(snapshot: AgentConfigSnapshot) -> bool:
    """The explicit setting wins; otherwise on for the Oz harness, off for third parties."""
    if snapshot.computer_use_enabled is not None:
        return snapshot.computer_use_enabled
    return is_oz_harness(harness_type(snapshot))


def mcp_json(mcp_servers: Mapping[str, Any] | None) -> str | None:
    """``mcp_servers`` as compact JSON, or None when absent or empty.

    ASCII-escaped so the argument survives any locale and never carries a lone
    surrogate; keys sorted at every level, as the Go worker's encoder writes a map
    (observed: tests/conformance, scenario direct-argv-and-env).
    """
    if not mcp_servers:
        return None
    return json.dumps(mcp_servers, separators=(",", ":"), sort_keys=True)


def snapshot_args(snapshot: AgentConfigSnapshot) -> list[str]:
    """Step 4 of the base arguments: the flags drawn from the agent config snapshot."""
    args: list[str] = []
    harness = harness_type(snapshot)
    model = non_blank(snapshot.model_id)
    if model is not None and is_oz_harness(harness):
        # Third-party harnesses pick their own model; --model would be wrong there.
        args += ["--model", model]
    if (profile := non_blank(snapshot.profile_id)) is not None:
        args += ["--profile", profile]
    if (skill := non_blank(snapshot.skill_spec)) is not None:
        args += ["--skill", skill]
    if (mcp := mcp_json(snapshot.mcp_servers)) is not None:
        args += ["--mcp", mcp]
    # Always explicit, so the CLI's own default never decides.
    args.append("--computer-use" if computer_use_enabled(snapshot) else "--no-computer-use")
    args += bedrock_args(snapshot)
    if harness is not None:
        # Passed for "oz" too, as upstream does: the CLI accepts it and the argv then
        # states the harness whatever the CLI's default becomes.
        args += ["--harness", harness]
    if (share := public_share(snapshot)) is not None:
        args += ["--share", share]
    if snapshot.snapshot_disabled is True:
        args.append("--no-snapshot")
    if (
        snapshot.snapshot_upload_timeout_secs is not None
        and snapshot.snapshot_upload_timeout_secs > 0
    ):
        args += ["--snapshot-upload-timeout", f"{snapshot.snapshot_upload_timeout_secs}s"]
    if (
        snapshot.snapshot_script_timeout_secs is not None
        and snapshot.snapshot_script_timeout_secs > 0
    ):
        args += ["--snapshot-script-timeout", f"{snapshot.snapshot_script_timeout_secs}s"]
    return args


def bedrock_args(snapshot: AgentConfigSnapshot) -> list[str]:
    """``--bedrock-inference-role`` (+ region) when AWS inference is on and has a role."""
    providers = snapshot.inference_providers
    aws = providers.aws if providers is not None else None
    if aws is None or aws.disabled:
        return []
    role = non_blank(aws.role_arn)
    if role is None:
        return []
    args = ["--bedrock-inference-role", role]
    if (region := non_blank(aws.region)) is not None:
        args += ["--bedrock-role-region", region]
    return args


def public_share(snapshot: AgentConfigSnapshot) -> str | None:
    """``public:view`` / ``public:edit`` for public access VIEWER / EDITOR, else None."""
    sharing = snapshot.session_sharing
    access = non_blank(sharing.public_access) if sharing is not None else None
    return _PUBLIC_SHARE.get(access) if access is not None else None


def idle_on_complete_args(snapshot: AgentConfigSnapshot | None, setting: str | None) -> list[str]:
    """Step 7: ``--idle-on-complete`` with the snapshot's minutes, the setting, or no value.

    A blank setting counts as unset (an empty value would be a malformed flag); a
    non-blank one is passed verbatim, since it is the operator's own text.
    """
    minutes = snapshot.idle_timeout_minutes if snapshot is not None else None
    if minutes is not None and minutes > 0:
        return ["--idle-on-complete", f"{minutes}m"]
    if setting is not None and setting.strip():
        return ["--idle-on-complete", setting]
    return ["--idle-on-complete"]


def base_args(
    task: Task, additional_oz_args: Sequence[str], settings: ParamSettings
) -> tuple[str, ...]:
    """The agent CLI arguments, in the exact order of docs/protocol.md."""
    args = ["agent", "run"]
    if task.owner is not None and task.owner.type == "TEAM":
        args += ["--share", "team:edit"]
    root_url = resolve_server_root_url(settings.server_root_url)
    args += ["--task-id", task.id, "--sandboxed", "--server-root-url", root_url]
    snapshot = task.agent_config_snapshot
    if snapshot is not None:
        args += snapshot_args(snapshot)
        if (environment := non_blank(snapshot.environment_id)) is not None:
            args += ["--environment", environment]
    args += additional_oz_args
    args += idle_on_complete_args(snapshot, settings.idle_on_complete)
    if (sharing_url := non_blank(settings.session_sharing_server_url)) is not None:
        args += ["--session-sharing-server-url", sharing_url]
    return tuple(args)


def task_shape(shape: InstanceShape | None) -> Shape | None:
    """The assignment's instance shape as the backends' own type (they see no wire type)."""
    return None if shape is None else Shape(vcpus=shape.vcpus, memory_gb=shape.memory_gb)


def build_task_params(assignment: TaskAssignment, settings: ParamSettings) -> TaskParams:
    """Turn a decoded assignment into the value every backend runs from."""
    task = assignment.task
    snapshot = task.agent_config_snapshot
    root_url = resolve_server_root_url(settings.server_root_url)
    image, defaulted = select_image(assignment.docker_image, settings.default_image)
    return TaskParams(
        task_id=assignment.task_id,
        run_id=task.id,
        execution_id=assignment.execution_id,
        env=task_environment(task.id, root_url, assignment.env_vars),
        image=image,
        sidecars=task_sidecars(assignment.sidecar_image, assignment.additional_sidecars),
        base_args=base_args(task, assignment.additional_oz_args, settings),
        harness=harness_type(snapshot),
        environment_id=non_blank(snapshot.environment_id) if snapshot is not None else None,
        server_root_url=root_url,
        task=task.raw or unstructure_task(task),
        instance_shape=task_shape(assignment.instance_shape),
        image_defaulted=defaulted,
        refusal=assignment_refusal(assignment, settings.shape_failure),
    )
