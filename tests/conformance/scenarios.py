"""The conformance scenarios: each drives a worker through one situation.

Steps only send frames and wait for observable events (a frame, an agent or hook
starting, a file going away); they never ask which worker they drive. ``differences``
names the entries of docs/conformance.md's table that apply to the scenario.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Final

import attrs

from tests.conformance.session import Session
from tests.conformance.workers import Settings

Steps = Callable[[Session], Awaitable[None]]


@attrs.frozen
class Scenario:
    name: str
    steps: Steps
    settings: Settings
    metrics: bool = False
    runtime_status: int = 200
    """What the remote runtime answers the Go example dispatch script."""
    differences: tuple[str, ...] = ()
    proxy: bool = False
    """Dial the server through tinyproxy (``HTTP_PROXY``)."""


SCENARIOS: list[Scenario] = []


DIRECT: Final = Settings()


def scenario(
    name: str,
    settings: Settings = DIRECT,
    *,
    metrics: bool = False,
    runtime_status: int = 200,
    differences: tuple[str, ...] = (),
    proxy: bool = False,
) -> Callable[[Steps], Steps]:
    """Register a scenario; the differences every scenario of its kind has are added:
    the direct backend's root marker, the scripts' environment."""
    implied = []
    if settings.backend == "direct":
        implied.append("workspace-root-marker")
    if settings.setup_command or settings.teardown_command or settings.dispatch_command:
        implied.append("api-key-withheld-from-scripts")

    def register(steps: Steps) -> Steps:
        names = (*implied, *differences)
        SCENARIOS.append(Scenario(name, steps, settings, metrics, runtime_status, names, proxy))
        return steps

    return register


def by_name() -> dict[str, Scenario]:
    return {s.name: s for s in SCENARIOS}


SLEEP: Final = "sleep 60"
"""An agent that runs until something stops it."""
QUICK_SENTINEL: Final = "sentinel"


async def sentinel(s: Session, prompt: str = "echo done") -> None:
    """A last task run to its end: every frame sent before it has been handled."""
    await s.assign(QUICK_SENTINEL, prompt)
    await s.terminal(QUICK_SENTINEL)


# -- direct backend ------------------------------------------------------------


@scenario("direct-success")
async def _direct_success(s: Session) -> None:
    await s.assign("t1", "echo hello; echo done")
    await s.terminal("t1")


@scenario("direct-agent-exit-3")
async def _agent_exit(s: Session) -> None:
    await s.assign("t1", "echo failing; exit 3")
    await s.terminal("t1")


@scenario("direct-cancel-mid-run")
async def _cancel_mid_run(s: Session) -> None:
    await s.assign("t1", SLEEP)
    await s.agent("t1")
    await s.cancel("t1")
    await s.terminal("t1")


@scenario("direct-cancel-during-setup", Settings(setup_command="{hook} setup block"))
async def _cancel_during_setup(s: Session) -> None:
    await s.assign("t1", "echo never")
    await s.hook("setup", "t1")
    await s.cancel("t1")
    await s.terminal("t1")


@scenario("direct-capacity-rejection", Settings(max_concurrent_tasks=1))
async def _capacity(s: Session) -> None:
    await s.assign("t1", SLEEP)
    await s.agent("t1")
    await s.assign("t2", "echo never")
    await s.frame("t2", "task_rejected")
    await s.cancel("t1")
    await s.terminal("t1")


@scenario("direct-invalid-and-unknown-frames")
async def _bad_frames(s: Session) -> None:
    await s.send("this is not JSON")
    await s.send("[1, 2, 3]")
    await s.send(json.dumps({"type": "task_progress", "data": {"task_id": "t0"}}))
    await s.send(json.dumps({"type": "task_assignment", "data": {"task_id": 42, "task": []}}))
    await s.send(json.dumps({"type": "task_cancellation", "data": {"task_id": "nobody"}}))
    await s.assign("t1", "echo still here")
    await s.terminal("t1")


@scenario("direct-unknown-fields")
async def _unknown_fields(s: Session) -> None:
    data = s.assignment("t1", "echo done", future_field={"nested": [1, 2]})
    data["task"]["another_new_field"] = "ignored"
    await s.send(json.dumps({"type": "task_assignment", "data": data, "extra": 1}))
    await s.terminal("t1")


@scenario("direct-duplicate-assignment", differences=("duplicate-runs-once",))
async def _duplicate(s: Session) -> None:
    frame = {"type": "task_assignment", "data": s.assignment("t1", "sleep 1", execution_id="e1")}
    await s.send(json.dumps(frame))
    await s.send(json.dumps(frame))
    await s.frame("t1", "task_claimed", 2)
    await s.terminal("t1")
    await sentinel(s, "sleep 2")


@scenario("direct-follow-up-after-completion")
async def _follow_up_after(s: Session) -> None:
    await s.assign("t1", "echo first", execution_id="e1")
    await s.terminal("t1")
    await s.assign("t1", "echo second", execution_id="e2")
    await s.terminal("t1", 2)


@scenario("direct-follow-up-while-running", differences=("follow-ups-serialised",))
async def _follow_up_while(s: Session) -> None:
    # The first execution uses its workspace after the second one has had time to end.
    await s.assign("t1", "sleep 2; git init -q .", execution_id="e1")
    await s.agent("t1")
    await s.assign("t1", "echo second", execution_id="e2")
    await s.frame("t1", "task_claimed", 2)
    await s.terminal("t1", 2)


@scenario("direct-setup-fails", Settings(setup_command="{hook} setup exit 7"))
async def _setup_fails(s: Session) -> None:
    await s.assign("t1", "echo never")
    await s.terminal("t1")


@scenario(
    "direct-setup-and-teardown-env",
    Settings(
        setup_command="{hook} setup",
        teardown_command="{hook} teardown",
        environment={"CONFIGURED_FOR_HOOKS": "configured"},
    ),
)
async def _hooks_env(s: Session) -> None:
    await s.assign("t1", "echo done")
    await s.terminal("t1")
    await s.hook("teardown", "t1")


@scenario(
    "direct-teardown-fails",
    Settings(teardown_command="{hook} teardown exit 5"),
    metrics=True,
    differences=("teardown-failure-counted",),
)
async def _teardown_fails(s: Session) -> None:
    await s.assign("t1", "echo done")
    await s.terminal("t1")
    await s.hook("teardown", "t1")


@scenario("direct-task-timeout", Settings(task_timeout="1s"), differences=("task-timeout",))
async def _task_timeout(s: Session) -> None:
    await s.assign("t1", "sleep 3")
    await s.terminal("t1")


@scenario("direct-sigterm-with-tasks-running", differences=("shutdown-message",))
async def _sigterm(s: Session) -> None:
    await s.assign("t1", SLEEP)
    await s.assign("t2", SLEEP)
    await s.agent("t1")
    await s.agent("t2")
    await s.sigterm()


@scenario("direct-server-restart-mid-task")
async def _restart_mid_task(s: Session) -> None:
    await s.assign("t1", SLEEP)
    await s.agent("t1")
    await s.stop_server()
    await s.start_server()
    await s.cancel("t1")
    await s.terminal("t1")


@scenario("direct-server-restart-result-owed")
async def _restart_result_owed(s: Session) -> None:
    await s.assign("t1", "sleep 0.5")
    await s.frame("t1", "task_claimed")
    await s.agent("t1")
    await s.stop_server()
    await s.agents_exited("t1")
    await s.gone(s.workspaces / "t1")
    await s.start_server()
    await s.terminal("t1")


@scenario(
    "direct-argv-and-env",
    Settings(environment={"CONFORMANCE_VALUE": "from config", "CONFIGURED": "x"}),
)
async def _argv_env(s: Session) -> None:
    snapshot = {
        "environment_id": "env-1",
        "model_id": " claude-4 ",
        "profile_id": "prof",
        "skill_spec": "skill",
        "mcp_servers": {"b": {"url": "http://x"}, "a": 1},
        "idle_timeout_minutes": 7,
        "session_sharing": {"public_access": "VIEWER"},
        "snapshot_disabled": True,
        "snapshot_upload_timeout_secs": 30,
    }
    await s.assign(
        "t1",
        "echo done",
        env={"CONFORMANCE_MULTILINE": "line one\nline two\n", "CONFORMANCE_VALUE": "from task"},
        additional_oz_args=["--extra", "arg"],
        task={"owner": {"Type": "TEAM", "Id": 7}, "agent_config_snapshot": snapshot},
    )
    await s.terminal("t1")


@scenario("direct-harness-claude")
async def _harness(s: Session) -> None:
    snapshot = {
        "harness": {"type": "claude"},
        "model_id": "ignored-for-claude",
        "inference_providers": {"aws": {"disabled": False, "role_arn": "arn:x", "region": "r"}},
    }
    await s.assign("t1", "echo done", task={"agent_config_snapshot": snapshot})
    await s.terminal("t1")


@scenario("direct-bad-task-id")
async def _bad_task_id(s: Session) -> None:
    await s.assign("..", "echo never")
    await s.terminal("..")


@scenario("direct-metrics-mixed-run", Settings(max_concurrent_tasks=2), metrics=True)
async def _metrics(s: Session) -> None:
    await s.assign("ok", "echo done")
    await s.terminal("ok")
    await s.assign("bad", "exit 3")
    await s.terminal("bad")
    await s.assign("long", SLEEP)
    await s.assign("long2", SLEEP)
    await s.agent("long")
    await s.agent("long2")
    await s.assign("over", "echo never")
    await s.frame("over", "task_rejected")
    await s.cancel("long")
    await s.cancel("long2")
    await s.terminal("long")
    await s.terminal("long2")


@scenario("direct-through-a-proxy", proxy=True)
async def _proxy(s: Session) -> None:
    await s.assign("t1", "echo done")
    await s.terminal("t1")


@scenario("direct-metrics-at-start", metrics=True)
async def _metrics_at_start(s: Session) -> None:
    pass


# -- command backend -----------------------------------------------------------

COMMAND_DIFFERENCES: Final = ("payload-sidecars-list",)
COMMAND: Final = Settings(
    backend="command",
    dispatch_command="{hook} dispatch",
    cancel_command="{hook} cancel",
    environment={"CONFORMANCE_VALUE": "configured"},
)


async def dispatched(s: Session, task_id: str) -> None:
    """Assign ``task_id`` and wait until the dispatch command has it (a handed-off task
    gets no result frame)."""
    await s.assign(task_id, None, execution_id="e1", env={"SECRET_TOKEN": "s3cret"})
    await s.hook("dispatch", task_id)


@scenario("command-success", COMMAND, differences=COMMAND_DIFFERENCES)
async def _command_success(s: Session) -> None:
    await dispatched(s, "t1")
    await dispatched(s, "t2")


@scenario(
    "command-failure",
    attrs.evolve(COMMAND, dispatch_command="{hook} dispatch exit 1"),
    runtime_status=500,
    differences=COMMAND_DIFFERENCES,
)
async def _command_failure(s: Session) -> None:
    await s.assign("t1", None, execution_id="e1")
    await s.terminal("t1")


@scenario(
    "command-cancel",
    # The dispatch command runs until the worker stops it, so the cancellation always
    # arrives while it runs (a cancel after the hand-off gets no result frame, in both).
    attrs.evolve(COMMAND, dispatch_command="{hook} dispatch block"),
    differences=COMMAND_DIFFERENCES,
)
async def _command_cancel(s: Session) -> None:
    await dispatched(s, "t1")
    await s.cancel("t1")
    await s.hook("cancel", "t1")
    await s.terminal("t1")


# -- docker backend ------------------------------------------------------------

DOCKER: Final = Settings(
    backend="docker",
    volumes=("{tmp}/shared:/shared:ro",),
    environment={"CONFORMANCE_VALUE": "configured"},
)
SLEEPING: Final = "standin: sleeping"
SIDECAR_RUN: Final = ("container-labels", "no-leaked-sidecar-containers")
"""A task container ran, its sidecar volume filled."""


async def docker_task(
    s: Session, task_id: str, behaviour: str, *, image: str = "task", **fields: object
) -> None:
    """Assign ``task_id`` in ``image`` with the stand-in agent sidecar behaving as told."""
    world = s.docker
    assert world is not None
    env = {"STANDIN_BEHAVIOUR": behaviour, "CONFORMANCE_MULTILINE": "one\ntwo\n"}
    await s.assign(
        task_id,
        None,
        env=env,
        docker_image=world.ref(image),
        sidecar_image=world.ref("agent"),
        **fields,
    )


@scenario("docker-success-volumes-env-sidecars", DOCKER, differences=SIDECAR_RUN)
async def _docker_success(s: Session) -> None:
    assert s.docker is not None
    extra = [{"image": s.docker.ref("extra"), "mount_path": "/mnt/extra", "read_write": False}]
    shape = {"vcpus": 1, "memory_gb": 1}
    await docker_task(s, "t1", "sleep:1", additional_sidecars=extra, instance_shape=shape)
    await s.container("t1", s.docker.ref("task"), SLEEPING)
    await s.terminal("t1")


@scenario("docker-agent-exit-3", DOCKER, differences=("no-leaked-sidecar-containers",))
async def _docker_exit(s: Session) -> None:
    await docker_task(s, "t1", "exit:3")
    await s.terminal("t1")


@scenario("docker-pull-failure", DOCKER)
async def _docker_pull_failure(s: Session) -> None:
    await docker_task(s, "t1", "ok", image="missing")
    await s.terminal("t1")


@scenario("docker-oom", DOCKER, differences=("no-leaked-sidecar-containers",))
async def _docker_oom(s: Session) -> None:
    await docker_task(s, "t1", "oom", instance_shape={"vcpus": 1, "memory_gb": 1})
    await s.terminal("t1")


@scenario("docker-cancel", DOCKER, differences=SIDECAR_RUN)
async def _docker_cancel(s: Session) -> None:
    assert s.docker is not None
    await docker_task(s, "t1", "sleep:60")
    await s.container("t1", s.docker.ref("task"), SLEEPING)
    await s.cancel("t1")
    await s.terminal("t1")


@scenario("docker-image-entrypoint", DOCKER, differences=SIDECAR_RUN)
async def _docker_entrypoint(s: Session) -> None:
    assert s.docker is not None
    await docker_task(s, "t1", "sleep:1", image="wrapped")
    await s.container("t1", s.docker.ref("wrapped"), SLEEPING)
    await s.terminal("t1")
