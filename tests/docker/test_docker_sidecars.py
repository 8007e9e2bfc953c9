"""Sidecar volumes against a real engine: filled once and reused, half-filled,
concurrent, a failed or cancelled fill, a private copy per task for read-write sidecars."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.abc

from ozw.backends.base import ExecuteResult
from ozw.backends.docker.references import volume_name
from ozw.backends.docker.rules import LABEL_ROLE, LABEL_WORKER
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.tasks.params import Sidecar
from tests.docker.conftest import Engine, Images
from tests.docker.runs import (
    CapturedLog,
    agent,
    containers,
    docker,
    failure_of,
    make_backend,
    make_params,
    new_task_id,
    run_task,
    wrapper_docker,
)
from tests.support.event_loops import on_both_loops


@on_both_loops
async def test_sidecar_volume_is_filled_once_and_reused(engine: Engine, images: Images) -> None:
    sidecar = images.fresh_sidecar(engine, "reuse")
    first = make_backend(engine)
    for _ in range(2):
        task_id = new_task_id("reuse")
        outcome, _ = await run_task(
            first, make_params(task_id, images.task, sidecars=[agent(images, sidecar)]),
            CapturedLog(task_id),
        )  # fmt: skip
        assert outcome is ExecuteResult.COMPLETED
    assert first.fills == 1
    image_id = await docker(engine, "image", "inspect", "--format={{.Id}}", sidecar)
    volume = volume_name(sidecar, image_id)
    assert await docker(engine, "volume", "ls", "--quiet", f"--filter=name=^{volume}$") == volume

    # A restarted worker finds the marker and reuses the volume too.
    restarted = make_backend(engine)
    task_id = new_task_id("reuse")
    captured = CapturedLog(task_id)
    outcome, _ = await run_task(
        restarted, make_params(task_id, images.task, sidecars=[agent(images, sidecar)]), captured
    )
    assert outcome is ExecuteResult.COMPLETED
    assert restarted.fills == 0
    assert f"reusing sidecar volume {volume}" in captured.messages()


@on_both_loops
async def test_a_volume_without_marker_is_filled_before_use(engine: Engine, images: Images) -> None:
    sidecar = images.fresh_sidecar(engine, "half")
    image_id = await docker(engine, "image", "inspect", "--format={{.Id}}", sidecar)
    volume = volume_name(sidecar, image_id)
    await docker(engine, "volume", "create", volume)  # as a crash mid-fill leaves it
    backend = make_backend(engine)
    task_id = new_task_id("half")
    outcome, _ = await run_task(
        backend, make_params(task_id, images.task, sidecars=[agent(images, sidecar)]),
        CapturedLog(task_id),
    )  # fmt: skip
    assert outcome is ExecuteResult.COMPLETED
    assert backend.fills == 1


@on_both_loops
async def test_concurrent_tasks_with_one_new_sidecar_fill_it_once(
    engine: Engine, images: Images
) -> None:
    sidecar = images.fresh_sidecar(engine, "concurrent")
    backend = make_backend(engine)
    outcomes: list[ExecuteResult | TaskFailure] = []

    async def one() -> None:
        task_id = new_task_id("concurrent")
        params = make_params(task_id, images.task, sidecars=[agent(images, sidecar)])
        outcome, _ = await run_task(backend, params, CapturedLog(task_id))
        outcomes.append(outcome)

    async with anyio.create_task_group() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
    assert outcomes == [ExecuteResult.COMPLETED] * 3
    assert backend.fills == 1


@on_both_loops
async def test_a_failed_fill_removes_the_volume(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    sidecar = images.fresh_sidecar(engine, "failfill")
    image_id = await docker(engine, "image", "inspect", "--format={{.Id}}", sidecar)
    failing = wrapper_docker(
        tmp_path,
        """
        if [ "$1" = export ]; then echo "injected export failure" >&2; exit 1; fi
        """,
    )
    backend = make_backend(engine, docker=failing)
    task_id = new_task_id("failfill")
    outcome, _ = await run_task(
        backend, make_params(task_id, images.task, sidecars=[agent(images, sidecar)]),
        CapturedLog(task_id),
    )  # fmt: skip
    failure = failure_of(outcome)
    assert failure.reason is FailureReason.SIDECAR_PREP
    assert "injected export failure" in failure.cause
    volume = volume_name(sidecar, image_id)
    assert await docker(engine, "volume", "ls", "--quiet", f"--filter=name=^{volume}$") == ""
    assert await containers(engine, f"{LABEL_WORKER}={backend.worker_id}") == []


@on_both_loops
async def test_a_read_write_sidecar_gets_a_volume_of_its_own_per_task(
    engine: Engine, images: Images
) -> None:
    sidecar = images.fresh_sidecar(engine, "rw")
    image_id = await docker(engine, "image", "inspect", "--format={{.Id}}", sidecar)
    shared = volume_name(sidecar, image_id)
    backend = make_backend(engine)

    async def one(sidecar_spec: Sidecar, env: Mapping[str, str]) -> tuple[CapturedLog, str]:
        task_id = new_task_id("rw")
        captured = CapturedLog(task_id)
        params = make_params(task_id, images.task, sidecars=[agent(images), sidecar_spec], env=env)
        outcome, run = await run_task(backend, params, captured)
        assert outcome is ExecuteResult.COMPLETED, captured.messages()
        return captured, run.sidecars[1].volume

    # A writer changes its read-write copy; it was filled from the image for it.
    writer, volume = await one(
        Sidecar(sidecar, "/rw", read_write=True),
        {"STANDIN_TOUCH": "/rw", "STANDIN_CAT": "/rw/nonce"},
    )
    assert writer.standin("touch /rw=") == ["ok"]
    assert len(writer.standin("cat /rw/nonce=")[0]) == 32
    assert volume.startswith(f"{shared}-rw-")
    assert await docker(engine, "volume", "ls", "--quiet", f"--filter=name=^{volume}$") == ""

    # Neither a read-only mount of the shared volume nor the next writer sees it.
    reader, mounted = await one(
        Sidecar(sidecar, "/ro"), {"STANDIN_TOUCH": "/ro", "STANDIN_CAT": "/ro/.standin-probe"}
    )
    assert mounted == shared
    assert reader.standin("touch /ro=") == ["fail"]
    assert "No such file" in reader.standin("cat /ro/.standin-probe=")[0]
    second, other = await one(
        Sidecar(sidecar, "/rw", read_write=True), {"STANDIN_CAT": "/rw/.standin-probe"}
    )
    assert other not in (volume, shared)
    assert "No such file" in second.standin("cat /rw/.standin-probe=")[0]
    assert backend.fills == 1  # the shared volume; private copies are not counted

    # Cleanup off keeps the private volume with the container, for debugging.
    keeping = make_backend(engine, cleanup=False)
    task_id = new_task_id("rwkept")
    params = make_params(
        task_id, images.task, sidecars=[agent(images), Sidecar(sidecar, "/rw", read_write=True)]
    )
    outcome, run = await run_task(keeping, params, CapturedLog(task_id))
    try:
        assert outcome is ExecuteResult.COMPLETED
        kept = run.private_volumes[0]
        assert await docker(engine, "volume", "ls", "--quiet", f"--filter=name=^{kept}$") == kept
    finally:
        if run.container is not None:
            await docker(engine, "rm", "--force", run.container, check=False)
        await docker(engine, "volume", "rm", "--force", *run.private_volumes, check=False)


@on_both_loops
async def test_a_cancellation_mid_create_leaves_no_fill_container(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    sidecar = images.fresh_sidecar(engine, "cancelfill")
    created = tmp_path / "created"
    # The fill container is created, then the CLI hangs: cancelled before it returns.
    slow = wrapper_docker(
        tmp_path,
        f"""
        case "$*" in
            *{LABEL_ROLE}=sidecar-fill*) "$REAL" "$@" || exit $?; : > {created}; exec sleep 60 ;;
        esac
        """,
    )
    backend = make_backend(engine, docker=slow)
    task_id = new_task_id("cancelfill")
    run = backend.open_task(
        make_params(task_id, images.task, sidecars=[agent(images, sidecar)]),
        CapturedLog(task_id).log,
    )
    scope = anyio.CancelScope()

    async def setup() -> None:
        with scope:
            await run.setup()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(setup)
            while not await anyio.Path(created).exists():  # noqa: ASYNC110 - a file, no event
                await anyio.sleep(0.05)
            scope.cancel()
        with anyio.CancelScope(shield=True):
            await run.teardown()
    assert scope.cancelled_caught
    assert await containers(engine, f"{LABEL_WORKER}={backend.worker_id}") == []
    assert backend.live_containers == frozenset()
