"""One docker task against a real engine: what it sees (argv, env, workdir, mounts,
limits, labels, the image's entrypoint) and how it ends (exit codes, OOM, start and
create failures). See ``tests/docker/README.md``."""

from __future__ import annotations

import json
import uuid

from ozw.backends.base import ExecuteResult
from ozw.backends.docker import DockerBackend
from ozw.backends.docker.references import private_volume_name
from ozw.backends.docker.rules import LABEL_EXECUTION, LABEL_TASK, LABEL_WORKER
from ozw.config import DockerConfig, EnvEntry
from ozw.tasks.failures import FailureReason
from ozw.tasks.params import Shape, Sidecar
from tests.docker.conftest import Engine, Images
from tests.docker.runs import (
    KILL_GRACE,
    CapturedLog,
    agent,
    containers,
    docker,
    event_watchers,
    failure_of,
    make_backend,
    make_params,
    new_task_id,
    run_task,
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
    backend = DockerBackend(
        DockerConfig(
            pull_policy="never",
            kill_grace=KILL_GRACE,
            volumes=(f"{data}:/data", f"{data_ro}:/data-ro:ro"),
            environment=(
                EnvEntry("CONFIGURED", "from-config"),
                EnvEntry("INHERITED"),
                EnvEntry("ABSENT_IN_WORKER"),
                EnvEntry("OVERRIDDEN", "by-config"),
            ),
        ),
        worker_id=f"w-{uuid.uuid4().hex[:8]}",
        cleanup=False,  # keep the container to inspect it
        environ={**engine.env, "INHERITED": "from-worker"},
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
        if run.container is not None:
            await docker(engine, "rm", "--force", run.container, check=False)
        kept = [data, data_ro, *run.private_volumes]  # cleanup off keeps the private one
        await docker(engine, "volume", "rm", "--force", *kept, check=False)


@on_both_loops
async def test_the_image_entrypoint_wraps_the_agent_as_in_the_go_worker(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("wrapped")
    base_args = ("agent", "run", "--task-id", task_id, "a b")
    params = make_params(task_id, images.wrapped, sidecars=[agent(images)], base_args=base_args)
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(backend, params, captured)
    assert outcome is ExecuteResult.COMPLETED, captured.messages()
    # The wrapper got /agent/entrypoint.sh and the base arguments, and exec'd them.
    assert captured.standin("wrapper ran with ") == [f"{1 + len(base_args)} arguments"]
    assert captured.standin("arg=") == list(base_args)
    assert captured.env()["WRAPPED_BY"] == "wrapper"


@on_both_loops
async def test_non_zero_exit_is_container_exit_and_the_container_is_removed(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("exit")
    params = make_params(
        task_id, images.task, sidecars=[agent(images)], env={"STANDIN_BEHAVIOUR": "exit:3"}
    )
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(backend, params, captured)
    failure = failure_of(outcome)
    assert (failure.reason, failure.exit_code) == (FailureReason.CONTAINER_EXIT, 3)
    assert failure.cause == "the agent exited with exit code 3"
    assert captured.standin("arg=") == ["agent", "run"]  # output was relayed live
    assert await containers(engine, f"{LABEL_TASK}={task_id}") == []
    assert backend.live_containers == frozenset()


@on_both_loops
async def test_memory_hog_under_a_small_shape_is_container_oom(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("oom")
    params = make_params(
        task_id,
        images.task,
        sidecars=[agent(images)],
        env={"STANDIN_BEHAVIOUR": "oom"},
        shape=Shape(memory_gb=0.02),
    )
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(backend, params, captured)
    failure = failure_of(outcome)
    assert captured.standin("hogging") == [" memory"]
    assert (failure.reason, failure.exit_code) == (FailureReason.CONTAINER_OOM, 137), failure
    assert "ran out of memory" in failure.cause


@on_both_loops
async def test_exit_137_under_a_memory_limit_without_an_oom_is_container_exit(
    engine: Engine, images: Images
) -> None:
    # The engine's event log is asked for a late OOM report; none comes.
    backend = make_backend(engine)
    task_id = new_task_id("exit137")
    params = make_params(
        task_id,
        images.task,
        sidecars=[agent(images)],
        env={"STANDIN_BEHAVIOUR": "exit:137"},
        shape=Shape(memory_gb=0.5),
    )
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(backend, params, captured)
    failure = failure_of(outcome)
    assert (failure.reason, failure.exit_code) == (FailureReason.CONTAINER_EXIT, 137), failure
    assert not any("OOM" in message for message in captured.messages())
    assert event_watchers(task_id) == [], "the `docker events` of the late OOM check still runs"


@on_both_loops
async def test_missing_entrypoint_is_container_start(engine: Engine, images: Images) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("nostart")
    outcome, _ = await run_task(backend, make_params(task_id, images.task), CapturedLog(task_id))
    failure = failure_of(outcome)
    assert failure.reason is FailureReason.CONTAINER_START
    assert failure.exit_code is None
    assert "entrypoint.sh" in failure.cause
    assert await containers(engine, f"{LABEL_TASK}={task_id}") == []


@on_both_loops
async def test_a_value_the_engine_refuses_is_container_create(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("create")
    params = make_params(
        task_id, images.task, sidecars=[agent(images)], shape=Shape(memory_gb=0.001)
    )
    outcome, _ = await run_task(backend, params, CapturedLog(task_id))
    failure = failure_of(outcome)
    assert failure.reason is FailureReason.CONTAINER_CREATE
    assert "Minimum memory limit" in failure.cause
