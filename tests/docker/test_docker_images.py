"""Images against a real engine and local registries: references refused before any
command, pulls with and without credentials, pull policies, a missing image, the
inspection cache, an image of another platform."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import anyio.abc

from ozw.backends.base import ExecuteResult
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.tasks.params import Sidecar, TaskParams
from tests.docker.conftest import Engine, Images, Registries, busybox_rootfs, import_image
from tests.docker.runs import (
    CapturedLog,
    Ran,
    agent,
    calls_per_line_backend,
    docker,
    engine_requests,
    failure_of,
    make_backend,
    make_params,
    run_agent_task,
    run_task,
)
from tests.support.event_loops import on_both_loops


@on_both_loops
async def test_bad_references_and_sidecars_are_refused_before_any_command(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    backend, calls = calls_per_line_backend(engine, tmp_path)
    cases: list[tuple[TaskParams, FailureReason, str]] = [
        (make_params("t", "-v"), FailureReason.IMAGE_PULL, "not a valid image reference"),
        (make_params("t", "--help"), FailureReason.IMAGE_PULL, "not a valid image reference"),
        (
            make_params("t", images.task, sidecars=[Sidecar("--privileged", "/agent")]),
            FailureReason.SIDECAR_PREP,
            "not a valid image reference",
        ),
        (
            make_params("t", images.task, sidecars=[Sidecar(" ", "/agent")]),
            FailureReason.SIDECAR_PREP,
            "empty image",
        ),
        (
            make_params("t", images.task, sidecars=[Sidecar(images.agent, "")]),
            FailureReason.SIDECAR_PREP,
            "mount path '' is empty",
        ),
        (
            make_params(
                "t",
                images.task,
                sidecars=[Sidecar(images.agent, "/agent"), Sidecar(images.extra, "/agent/")],
            ),
            FailureReason.SIDECAR_PREP,
            "share the mount path /agent",
        ),
    ]
    for params, reason, text in cases:
        outcome, _ = await run_task(backend, params, CapturedLog("t"))
        failure = failure_of(outcome)
        assert (failure.reason, text in failure.cause) == (reason, True), failure
    assert not calls.exists(), calls.read_text()


@on_both_loops
async def test_pull_always_from_an_open_registry(
    engine: Engine, images: Images, registries: Registries
) -> None:
    ran = await run_agent_task(
        make_backend(engine, pull_policy="always"), images, "pull",
        image=registries.open.ref("ozw/task:1"), agent_image=registries.open.ref("ozw/agent:1"),
    )  # fmt: skip
    assert ran.outcome is ExecuteResult.COMPLETED, ran.log.messages()
    assert any(m.startswith("pulled image") for m in ran.log.messages())


@on_both_loops
async def test_pull_uses_the_docker_cli_credentials(
    engine: Engine, images: Images, registries: Registries
) -> None:
    image, agent_image = registries.auth.ref("ozw/task:1"), registries.auth.ref("ozw/agent:1")

    async def pull_with(docker_config: str) -> Ran:
        backend = make_backend(
            engine, pull_policy="always", environ={"DOCKER_CONFIG": docker_config}
        )
        return await run_agent_task(backend, images, "auth", image=image, agent_image=agent_image)

    failure = (await pull_with(registries.empty_config)).failure
    assert failure.reason is FailureReason.IMAGE_PULL
    assert image in failure.cause
    assert "basic auth credentials" in failure.cause
    assert (await pull_with(registries.docker_config)).outcome is ExecuteResult.COMPLETED


@on_both_loops
async def test_a_missing_image_is_a_clear_image_pull_failure(
    engine: Engine, images: Images, registries: Registries
) -> None:
    missing = registries.open.ref("ozw/missing:1")
    for policy in ("always", "if-not-present"):
        backend = make_backend(engine, pull_policy=policy)
        outcome, _ = await run_task(backend, make_params("m", missing), CapturedLog("m"))
        failure = failure_of(outcome)
        assert failure.reason is FailureReason.IMAGE_PULL
        assert failure.cause.startswith(f"could not pull image {missing}: ")
        assert "not found" in failure.cause or "unknown" in failure.cause

    never = make_backend(engine, pull_policy="never")
    outcome, _ = await run_task(never, make_params("m", missing), CapturedLog("m"))
    failure = failure_of(outcome)
    assert failure.cause == f"image {missing} is not present and pull_policy is 'never'"


@on_both_loops
async def test_if_not_present_uses_a_local_image_without_pulling(
    engine: Engine, images: Images
) -> None:
    # The test images exist in no registry: a pull would fail.
    ran = await run_agent_task(make_backend(engine, pull_policy="if-not-present"), images, "local")
    assert ran.outcome is ExecuteResult.COMPLETED
    assert not any("pulling" in m for m in ran.log.messages())


@on_both_loops
async def test_a_present_image_is_inspected_once_and_again_after_a_failure(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    # A task image of this test's own, so it can be removed under the backend.
    image = f"{images.prefix}/cached-{uuid.uuid4().hex[:8]}:1"
    rootfs = busybox_rootfs({"/nonce": (uuid.uuid4().bytes, 0o644)})
    await anyio.to_thread.run_sync(import_image, engine, image, rootfs)
    backend, calls = calls_per_line_backend(engine, tmp_path, pull_policy="never")

    async def one() -> tuple[ExecuteResult | TaskFailure, list[str]]:
        calls.unlink(missing_ok=True)
        calls.with_name("calls.http").unlink(missing_ok=True)
        outcome = (await run_agent_task(backend, images, "cached", image=image)).outcome
        # Asked on the task's engine connection, never with a CLI process of their own.
        assert not [c for c in calls.read_text().splitlines() if c.startswith("image ")]
        inspected = [r for r in engine_requests(calls) if r.startswith("GET /images/")]
        return outcome, inspected

    first, inspected = await one()
    assert first is ExecuteResult.COMPLETED
    assert len(inspected) == 2  # the task image and the agent sidecar
    second, inspected = await one()
    assert second is ExecuteResult.COMPLETED
    assert inspected == []  # known: no inspection per task under never/if-not-present
    await docker(engine, "image", "rm", "--force", image)
    third, _ = await one()
    assert failure_of(third).reason is FailureReason.CONTAINER_CREATE  # by its old ID
    fourth, inspected = await one()
    assert failure_of(fourth).cause == f"image {image} is not present and pull_policy is 'never'"
    assert inspected == [f"GET /images/{image}/json"]  # looked again


@on_both_loops
async def test_an_image_of_another_platform_is_refused_naming_both(
    engine: Engine, images: Images
) -> None:
    daemon = "linux/" + await docker(engine, "version", "--format={{.Server.Arch}}")
    foreign = "linux/arm64" if daemon != "linux/arm64" else "linux/amd64"
    for policy in ("never", "if-not-present"):
        backend = make_backend(engine, pull_policy=policy)
        outcome, _ = await run_task(backend, make_params("p", images.foreign), CapturedLog("p"))
        failure = failure_of(outcome)
        assert failure.reason is FailureReason.IMAGE_PULL
        assert failure.cause == (
            f"image {images.foreign} is for {foreign} but the Docker daemon runs {daemon}"
        )
    backend = make_backend(engine)
    params = make_params("p", images.task, sidecars=[agent(images, images.foreign)])
    failure = failure_of((await run_task(backend, params, CapturedLog("p")))[0])
    assert failure.cause.startswith(f"sidecar image {images.foreign} is for {foreign}")
