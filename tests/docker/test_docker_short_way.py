"""What keeps a docker task's way short: the result reported before the container's
removal, no inspection after an exit 0, one engine connection kept for the next task."""

from __future__ import annotations

from pathlib import Path

from ozw.backends.base import ExecuteResult
from ozw.backends.docker.rules import LABEL_TASK
from ozw.tasks.lifecycle import TaskControl, TaskOutcome, TaskResult
from ozw.tasks.lifecycle import run_task as run_in_lifecycle
from ozw.telemetry.logs import TaskLog
from tests.docker.conftest import Engine, Images
from tests.docker.runs import (
    CapturedLog,
    agent,
    calls_per_line_backend,
    containers,
    engine_requests,
    make_backend,
    make_params,
    new_task_id,
    run_agent_task,
)
from tests.support.event_loops import on_both_loops


async def test_the_result_is_reported_before_the_container_is_removed(
    engine: Engine, images: Images
) -> None:
    backend = make_backend(engine)
    task_id = new_task_id("report")
    params = make_params(task_id, images.task, sidecars=[agent(images)])
    live_at_report: list[frozenset[str]] = []

    def report(outcome: TaskOutcome) -> None:
        assert outcome.result is TaskResult.COMPLETED
        live_at_report.append(backend.live_containers)

    outcome = await run_in_lifecycle(backend, TaskControl(params, TaskLog(task_id)), report=report)
    assert outcome.result is TaskResult.COMPLETED
    assert not outcome.teardown_failed
    assert len(live_at_report) == 1
    assert len(live_at_report[0]) == 1, "reported once the container was already removed"
    # The slot (run_task) was held until the removal was done.
    assert backend.live_containers == frozenset()
    assert await containers(engine, f"{LABEL_TASK}={task_id}") == []


@on_both_loops
async def test_an_exit_0_is_not_inspected_before_the_result_and_nonzero_is(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    backend, calls = calls_per_line_backend(engine, tmp_path)

    async def calls_of(env: dict[str, str]) -> tuple[ExecuteResult | object, list[str]]:
        calls.unlink(missing_ok=True)
        task_id = new_task_id("inspected")
        params = make_params(task_id, images.task, sidecars=[agent(images)], env=env)
        run = backend.open_task(params, CapturedLog(task_id).log)
        await run.setup()
        try:
            result: ExecuteResult | object = await run.execute()
        except Exception as exc:
            result = exc
        made = calls.read_text().splitlines()
        await run.teardown()
        return result, [" ".join(c.split()[:2]) for c in made]

    result, made = await calls_of({})
    assert result is ExecuteResult.COMPLETED
    assert "container inspect" not in made, made  # execute ended with the CLI's exit 0
    result, made = await calls_of({"STANDIN_BEHAVIOUR": "exit:3"})
    assert "container inspect" in made, made  # exit code and OOM kill classify it


@on_both_loops
async def test_the_next_task_takes_the_spare_connection(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    backend, calls = calls_per_line_backend(engine, tmp_path)

    async def one() -> list[str]:
        calls.unlink(missing_ok=True)
        assert (await run_agent_task(backend, images, "spare")).outcome is ExecuteResult.COMPLETED
        return calls.read_text().splitlines()

    async with backend:
        first = await one()
        # One connection, opened as setup starts; given back after the create, taken
        # again for the teardown's inspection and removal, then kept as the spare.
        assert first.count("system dial-stdio") == 1, first
        assert first[0] == "system dial-stdio", first
        assert backend.engines.has_spare
        second = await one()
        # The CLI starts only for the container's start: the rest is engine requests.
        assert [call.split()[:2] for call in second] == [["start", "--attach"]], second
        # The teardown's inspection and removal went on the kept connection.
        last = [r.split("/")[0:2] for r in engine_requests(calls)[-2:]]
        assert last == [["GET ", "containers"], ["DELETE ", "containers"]], last
        assert backend.engines.has_spare
    assert not backend.engines.has_spare  # closed with the backend
