"""One docker task against a real engine: what it sees (argv, env, workdir, mounts,
limits, labels, the image's entrypoint) and how it ends (exit codes, OOM, start and
create failures). See ``tests/docker/README.md``."""

from __future__ import annotations

import json

import pytest

from ozw.backends.base import ExecuteResult
from ozw.backends.docker.references import private_volume_name
from ozw.backends.docker.rules import LABEL_EXECUTION, LABEL_TASK, LABEL_WORKER
from ozw.config import EnvEntry
from ozw.tasks.failures import FailureReason
from ozw.tasks.params import Shape, Sidecar
from tests.docker.conftest import Engine, Images
from tests.docker.runs import (
    CapturedLog,
    agent,
    docker,
    event_watchers,
    failure_of,
    make_backend,
    make_params,
    new_task_id,
    remove_kept,
    run_agent_task,
    run_task,
    task_containers,
)
from tests.support.event_loops import on_both_loops


@on_both_loops
async def test_task_sees_argv_env_workdir_mounts_limits_and_labels(
    engine: Engine, images: Images
) -> None:
    task_id = new_task_id("full")
    base_args = (
        "agent", "run", "--task-id", task_id, "--mcp", '{"a": "b c"}',
        "--", "-e", "X=1", "$HOME", "", "quote'\"",
    )  # fmt: skip
    data, data_ro = f"{images.prefix}-data-{task_id}", f"{images.prefix}-dataro-{task_id}"
    backend = make_backend(
        engine,
        cleanup=False,  # keep the container to inspect it
        environ={"INHERITED": "from-worker"},
        volumes=(f"{data}:/data", f"{data_ro}:/data-ro:ro"),
        environment=(
            EnvEntry("CONFIGURED", "from-config"),
            EnvEntry("INHERITED"),
            EnvEntry("ABSENT_IN_WORKER"),
            EnvEntry("OVERRIDDEN", "by-config"),
        ),
    )
    params = make_params(
        task_id,
        images.task,
        sidecars=[
            agent(images),
            Sidecar(images.extra, "/extra"),
            Sidecar(images.extra, "/rw", read_write=True),
        ],
        env={
            "SECRET_TOKEN": "s3cr3t value",
            "SPACES": " a  b ",
            # CLI-sensitive names: they must reach the container, not steer the CLI.
            "HOME": "/home/agent",
            "DOCKER_HOST": "tcp://task-value.invalid:1",
            "OVERRIDDEN": "by-task",
            "STANDIN_TOUCH": "/agent /extra /rw /data /data-ro /workspace",
            "STANDIN_CAT": "/extra/hello.txt",
        },
        base_args=base_args,
        shape=Shape(vcpus=1, memory_gb=0.25),
    )
    captured = CapturedLog(task_id)
    outcome, run = await run_task(backend, params, captured)
    try:
        assert outcome is ExecuteResult.COMPLETED, captured.messages()
        assert captured.standin("arg=") == list(base_args)
        assert captured.standin("cwd=") == ["/workspace"]
        env = captured.env()
        expected = {
            "TASK_ID": task_id,
            "SECRET_TOKEN": "s3cr3t value",
            "SPACES": " a  b ",
            "HOME": "/home/agent",
            "DOCKER_HOST": "tcp://task-value.invalid:1",
            "CONFIGURED": "from-config",
            "INHERITED": "from-worker",
            "OVERRIDDEN": "by-config",
        }
        assert {name: env.get(name) for name in expected} == expected
        assert "ABSENT_IN_WORKER" not in env
        touched = dict(line.partition("=")[::2] for line in captured.standin("touch "))
        assert touched == {
            "/agent": "fail",
            "/extra": "fail",
            "/rw": "ok",
            "/data": "ok",
            "/data-ro": "fail",
            "/workspace": "ok",
        }
        assert captured.standin("cat /extra/hello.txt=") == ["hello from extra"]

        assert run.container is not None
        info = json.loads(await docker(engine, "container", "inspect", run.container))[0]
        host_config, config = info["HostConfig"], info["Config"]
        assert host_config["NanoCpus"] == 1_000_000_000
        assert host_config["Memory"] == host_config["MemorySwap"] == 256 * 1024 * 1024
        assert config["WorkingDir"] == "/workspace"
        assert config["Entrypoint"] is None  # the image's own, and this one has none
        assert config["Cmd"] == ["/agent/entrypoint.sh", *base_args]
        labels = config["Labels"]
        assert labels[LABEL_WORKER] == backend.worker_id
        assert labels[LABEL_TASK] == task_id
        assert labels[LABEL_EXECUTION] == "exec-1"
        agent_volume, extra_volume, rw_volume = (s.volume for s in run.sidecars)
        # The read-write mount is a private copy, never the shared volume.
        assert rw_volume == private_volume_name(extra_volume, run.suffix)
        # The CLI keeps -v flags in a map, so the engine's order is not the argv's
        # (the argv order is checked in test_docker_rules; the engine sorts mounts by
        # path depth itself, so the order never changes what the task sees).
        assert sorted(host_config["Binds"]) == sorted(
            [
                f"{agent_volume}:/agent:ro",
                f"{extra_volume}:/extra:ro",
                f"{rw_volume}:/rw:rw",
                f"{data}:/data",
                f"{data_ro}:/data-ro:ro",
            ]
        )
        assert backend.live_containers == frozenset()
    finally:
        await remove_kept(engine, run, data, data_ro)


@on_both_loops
async def test_the_image_entrypoint_wraps_the_agent_as_in_the_go_worker(
    engine: Engine, images: Images
) -> None:
    base_args = ("agent", "run", "--task-id", "t-wrapped", "a b")
    ran = await run_agent_task(
        make_backend(engine), images, "wrapped", image=images.wrapped, base_args=base_args
    )
    assert ran.outcome is ExecuteResult.COMPLETED, ran.log.messages()
    # The wrapper got /agent/entrypoint.sh and the base arguments, and exec'd them.
    assert ran.log.standin("wrapper ran with ") == [f"{1 + len(base_args)} arguments"]
    assert ran.log.standin("arg=") == list(base_args)
    assert ran.log.env()["WRAPPED_BY"] == "wrapper"


@on_both_loops
async def test_non_zero_exit_is_container_exit_and_the_container_is_removed(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    ran = await run_agent_task(backend, images, "exit", env={"STANDIN_BEHAVIOUR": "exit:3"})
    assert (ran.failure.reason, ran.failure.exit_code) == (FailureReason.CONTAINER_EXIT, 3)
    assert ran.failure.cause == "the agent exited with exit code 3"
    assert ran.log.standin("arg=") == ["agent", "run"]  # output was relayed live
    assert await task_containers(engine, ran.task_id) == []
    assert backend.live_containers == frozenset()


@pytest.mark.parametrize(
    ("behaviour", "memory_gb", "reason", "cause"),
    [
        ("oom", 0.02, FailureReason.CONTAINER_OOM, "ran out of memory"),
        # The engine's event log is asked for a late OOM report; none comes.
        ("exit:137", 0.5, FailureReason.CONTAINER_EXIT, "(exit code 137)"),
    ],
)
@on_both_loops
async def test_an_out_of_memory_kill_is_container_oom_and_a_bare_exit_137_is_not(
    engine: Engine, images: Images, behaviour: str, memory_gb: float, reason: FailureReason,
    cause: str,
) -> None:  # fmt: skip
    ran = await run_agent_task(
        make_backend(engine), images, "oom",
        env={"STANDIN_BEHAVIOUR": behaviour}, shape=Shape(memory_gb=memory_gb),
    )  # fmt: skip
    assert (ran.failure.reason, ran.failure.exit_code) == (reason, 137), ran.failure
    assert cause in ran.failure.cause
    hogged = behaviour == "oom"
    assert ran.log.standin("hogging") == ([" memory"] if hogged else [])
    assert hogged or not any("OOM" in message for message in ran.log.messages())
    assert event_watchers(ran.task_id) == [], "the `docker events` of the late OOM check runs"


@on_both_loops
async def test_missing_entrypoint_is_container_start(engine: Engine, images: Images) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("nostart")
    outcome, _ = await run_task(backend, make_params(task_id, images.task), CapturedLog(task_id))
    failure = failure_of(outcome)
    assert failure.reason is FailureReason.CONTAINER_START
    assert failure.exit_code is None
    assert "entrypoint.sh" in failure.cause
    assert await task_containers(engine, task_id) == []


@on_both_loops
async def test_a_value_the_engine_refuses_is_container_create(
    engine: Engine, images: Images
) -> None:
    ran = await run_agent_task(make_backend(engine), images, "create", shape=Shape(memory_gb=0.001))
    assert ran.failure.reason is FailureReason.CONTAINER_CREATE
    assert "Minimum memory limit" in ran.failure.cause
