"""``OTEL_METRICS_EXPORTER=console`` and ``OTEL_TRACES_EXPORTER=console``: the worker's
metrics and task spans on standard output, as the Go worker writes them there."""

from __future__ import annotations

import pytest
import trio

from ozw.config import WorkerConfig
from ozw.telemetry.otel_env import read_plan
from ozw.worker import Worker
from tests.support.scripted_backend import ScriptedBackend
from tests.support.worker import API_KEY, assignment, fast_settings, start_server, terminal_for
from tests.telemetry.test_collector_down import start


async def test_console_exporters_write_metrics_and_spans_to_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan = read_plan({"OTEL_METRICS_EXPORTER": "console", "OTEL_TRACES_EXPORTER": "console"})
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        worker = Worker(
            WorkerConfig(worker_id="w1", api_key=API_KEY),
            ScriptedBackend(),
            connection_settings=fast_settings(server.url),
            otel=plan,
        )
        stopped = await start(nursery, worker)
        with trio.fail_after(30):
            await server.send(assignment("printed"))
            await server.wait_for(terminal_for("printed"))
            worker.request_stop("test over")
            await stopped.wait()  # the last export at the stop
        nursery.cancel_scope.cancel()
    out = capsys.readouterr().out
    assert '"name": "oz_worker_tasks_claimed_total"' in out
    assert '"name": "oz_worker.task"' in out
    assert '"task.id": "printed"' in out
