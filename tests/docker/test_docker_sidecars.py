"""Sidecar volumes against a real engine: filled once and reused, half-filled,
concurrent, a failed or cancelled fill, a private copy per task for read-write sidecars."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.abc

from ozw.backends.base import ExecuteResult
from ozw.backends.docker.rules import LABEL_ROLE
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.tasks.params import Sidecar
from tests.docker.conftest import Engine, Images
from tests.docker.runs import (
    CapturedLog,
    agent,
    docker,
    make_backend,
    make_params,
    new_task_id,
    remove_kept,
    run_agent_task,
    sidecar_volume,
    volume_listed,
    worker_containers,
    wrapper_docker,
)
from tests.support.event_loops import on_both_loops


@on_both_loops
async def test_sidecar_volume_is_filled_once_and_reused(engine: Engine, images: Images) -> None:
    sidecar = images.fresh_sidecar(engine, "reuse")
    first = make_backend(engine)
    for _ in range(2):
        ran = await run_agent_task(first, images, "reuse", agent_image=sidecar)
        assert ran.outcome is ExecuteResult.COMPLETED
    assert first.fills == 1
    volume = await sidecar_volume(engine, sidecar)
    assert await volume_listed(engine, volume) == volume

    # A restarted worker finds the marker and reuses the volume too.
    restarted = make_backend(engine)
    ran = await run_agent_task(restarted, images, "reuse", agent_image=sidecar)
    assert ran.outcome is ExecuteResult.COMPLETED
    assert restarted.fills == 0
    assert f"reusing sidecar volume {volume}" in ran.log.messages()


@on_both_loops
async def test_a_volume_without_marker_is_filled_before_use(engine: Engine, images: Images) -> None:
    sidecar = images.fresh_sidecar(engine, "half")
    await docker(engine, "volume", "create", await sidecar_volume(engine, sidecar))  # mid-fill
    backend = make_backend(engine)
    ran = await run_agent_task(backend, images, "half", agent_image=sidecar)
    assert ran.outcome is ExecuteResult.COMPLETED
    assert backend.fills == 1


@on_both_loops
async def test_concurrent_tasks_with_one_new_sidecar_fill_it_once(
    engine: Engine, images: Images
) -> None:
    sidecar = images.fresh_sidecar(engine, "concurrent")
    backend = make_backend(engine)
    outcomes: list[ExecuteResult | TaskFailure] = []

    async def one() -> None:
        outcomes.append(
            (await run_agent_task(backend, images, "many", agent_image=sidecar)).outcome
        )

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
    failing = wrapper_docker(
        tmp_path,
        """
        if [ "$1" = export ]; then echo "injected export failure" >&2; exit 1; fi
        """,
    )
    backend = make_backend(engine, docker=failing)
    ran = await run_agent_task(backend, images, "failfill", agent_image=sidecar)
    assert ran.failure.reason is FailureReason.SIDECAR_PREP
    assert "injected export failure" in ran.failure.cause
    assert await volume_listed(engine, await sidecar_volume(engine, sidecar)) == ""
    assert await worker_containers(engine, backend) == []


@on_both_loops
async def test_a_read_write_sidecar_gets_a_volume_of_its_own_per_task(
    engine: Engine, images: Images
) -> None:
    sidecar = images.fresh_sidecar(engine, "rw")
    shared = await sidecar_volume(engine, sidecar)
    backend = make_backend(engine)

    async def one(mounted: Sidecar, env: Mapping[str, str]) -> tuple[CapturedLog, str]:
        ran = await run_agent_task(backend, images, "rw", sidecars=[mounted], env=env)
        assert ran.outcome is ExecuteResult.COMPLETED, ran.log.messages()
        return ran.log, ran.run.sidecars[1].volume

    # A writer changes its read-write copy; it was filled from the image for it.
    writer, volume = await one(
        Sidecar(sidecar, "/rw", read_write=True),
        {"STANDIN_TOUCH": "/rw", "STANDIN_CAT": "/rw/nonce"},
    )
    assert writer.standin("touch /rw=") == ["ok"]
    assert len(writer.standin("cat /rw/nonce=")[0]) == 32
    assert volume.startswith(f"{shared}-rw-")
    assert await volume_listed(engine, volume) == ""

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
    rw = [Sidecar(sidecar, "/rw", read_write=True)]
    ran = await run_agent_task(keeping, images, "rwkept", sidecars=rw)
    try:
        assert ran.outcome is ExecuteResult.COMPLETED
        kept = ran.run.private_volumes[0]
        assert await volume_listed(engine, kept) == kept
    finally:
        await remove_kept(engine, ran.run)


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
    assert await worker_containers(engine, backend) == []
    assert backend.live_containers == frozenset()
