"""``ozw demo``: the whole worker on this machine, with nothing to set up.

One Trio nursery holds a local dispatch server, a worker on the direct backend
(running the stand-in ``oz`` agent in a temporary workspace root) and a script of
sample tasks: some succeed, one fails, one is cancelled mid-run and one is
rejected because the worker is at capacity. Progress is shown live
(:mod:`ozw.dev.demo_view`: a status view on a terminal, plain lines otherwise), then
the outcomes and a pointer to the next step.
"""

from __future__ import annotations

import functools
import logging
import secrets
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Final

import attrs
import trio
from rich.console import Console

from ozw.backends.direct import DirectBackend
from ozw.config import DirectConfig, WorkerConfig
from ozw.dev.demo_view import StatusView, make_console
from ozw.dev.local import open_local_worker
from ozw.dev.server import DispatchServer
from ozw.telemetry.logs import configure_logging
from ozw.wire.codec import (
    Task,
    TaskAssignment,
    TaskCancellation,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskRejected,
)
from ozw.worker import Worker

MAX_CONCURRENT = 3
NEXT_STEP: Final = (
    "Next: `ozw config init` writes config/worker.toml to run a worker against Oz "
    "(README: Run against Oz)."
)


@attrs.frozen
class SampleTask:
    task_id: str
    title: str
    prompt: str


SAMPLES = (
    SampleTask(
        "demo-fix-flaky-test",
        "Fix the flaky test",
        "echo Reading the repository; sleep 1; echo Found the race in test_upload; "
        "sleep 1; echo Fixed it",
    ),
    SampleTask(
        "demo-broken-build",
        "Investigate the broken build",
        "echo Building; sleep 1.5; exit 3",
    ),
    SampleTask(
        "demo-long-refactor",
        "A long refactor",
        "echo Starting a long refactor; sleep 60",
    ),
    SampleTask("demo-over-capacity", "One task too many", "echo never runs"),
    SampleTask(
        "demo-write-docs",
        "Write the docs",
        "echo Writing docs; print 5 lines; sleep 0.5; echo Done",
    ),
)


def standin_agent() -> Path:
    """The stand-in ``oz`` CLI: packaged with a wheel, or the repository's copy."""
    packaged = resources.files("ozw").joinpath("_standin/oz")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "examples" / "agent" / "oz"


async def run_demo(
    console: Console, *, live: bool, workdir: Path, metrics_addr: str | None = None
) -> int:
    """Run the demo; returns the exit code (0, or 130 after a second Ctrl-C)."""
    api_key = secrets.token_urlsafe(16)
    server = DispatchServer(api_key)
    view = StatusView(console, live=live)
    server.on_receive.append(view.on_message)
    config = WorkerConfig(
        worker_id="demo-worker",
        api_key=api_key,
        max_concurrent_tasks=MAX_CONCURRENT,
        shutdown_grace=15,
        metrics_addr=metrics_addr,
        backend=DirectConfig(
            workspace_root=str(workdir / "workspaces"),
            oz_path=str(standin_agent()),
            setup_command='echo "DEMO_GREETING=hello from setup" >> "$OZ_ENVIRONMENT_FILE"',
            teardown_command='echo "teardown of $OZ_RUN_ID"',
            kill_grace=2,
        ),
    )
    assert isinstance(config.backend, DirectConfig)
    backend = DirectBackend(config.backend, cleanup=True)
    with view:
        async with (
            open_local_worker(
                config,
                backend,
                server=server,
                handle_signals=True,
                stop_reason="demo finished",
            ) as local,
            trio.open_nursery() as nursery,
        ):
            worker = local.worker
            view.server_action(f"listens on 127.0.0.1:{server.port}; worker connected")
            if worker.metrics_port is not None:
                view.server_action(f"metrics on http://127.0.0.1:{worker.metrics_port}/metrics")
            if live:
                nursery.start_soon(_tick, view)
            with trio.CancelScope() as script:
                nursery.start_soon(_stop_script_when, local.stopped, script)
                await _play(server, view, worker)
            # A signal stopped the worker (its tasks end as graceful_shutdown), not the script.
            interrupted = script.cancelled_caught or not worker.supervisor.accepting
            worker.request_stop("demo finished")
            await local.stopped.wait()
            nursery.cancel_scope.cancel()
    if not live:
        view.print_table()
    console.print()
    if interrupted:
        console.print(
            "Stopped by a signal: running tasks were cancelled, their teardown ran and "
            "each was reported as graceful_shutdown.",
            soft_wrap=True,
        )
    console.print(NEXT_STEP, soft_wrap=True)
    return local.exit_code or 0


async def _tick(view: StatusView) -> None:
    # Running tasks' durations move even when no message arrives.
    while True:
        await trio.sleep(0.5)
        view.redraw()


async def _stop_script_when(done: trio.Event, script: trio.CancelScope) -> None:
    # Ctrl-C stops the worker; the script of sample tasks must stop with it.
    await done.wait()
    script.cancel()


def _assignment(sample: SampleTask) -> TaskAssignment:
    return TaskAssignment(
        sample.task_id,
        Task(
            id=sample.task_id,
            title=sample.title,
            raw={"id": sample.task_id, "title": sample.title},
        ),
        execution_id=f"exec-{sample.task_id}",
        env_vars={"OZ_STANDIN_PROMPT": sample.prompt},
    )


async def _assign(server: DispatchServer, view: StatusView, sample: SampleTask) -> None:
    view.assigned(sample.task_id, sample.title)
    await server.send(_assignment(sample))


async def _play(server: DispatchServer, view: StatusView, worker: Worker) -> None:
    fix, broken, long, extra, docs = SAMPLES
    for sample in (fix, broken, long):
        await _assign(server, view, sample)
    await server.wait_for(lambda m: isinstance(m, TaskClaimed) and m.task_id == long.task_id)
    # Three tasks run: the fourth is one too many.
    await _assign(server, view, extra)
    await server.wait_for(lambda m: isinstance(m, TaskRejected))
    # Let the long task really start before the server cancels it.
    await trio.sleep(1.5)
    view.cancelling(long.task_id)
    await server.send(TaskCancellation(long.task_id))
    await server.wait_for(
        lambda m: m.task_id == fix.task_id and isinstance(m, TaskCompleted | TaskFailed)
    )
    await _assign(server, view, docs)
    claimed = [row.task_id for row in view.rows.values() if row.state != "rejected"]
    await server.wait_until(
        lambda: all(view.rows[t].state not in ("assigned", "running") for t in claimed)
    )
    await worker.outbox.wait_empty()


def demo_main(*, log_path: str | None = None, metrics_addr: str | None = None) -> int:
    """The ``ozw demo`` command."""
    console = make_console(sys.stdout)
    live = console.is_terminal and not console.is_dumb_terminal
    with tempfile.TemporaryDirectory(prefix="ozw-demo-") as tmp:
        workdir = Path(tmp)
        log_file = Path(log_path) if log_path else workdir / "worker.log"
        with open(log_file, "a", encoding="utf-8") as log_stream:
            # The log goes where it was asked to go; without --log-file, a terminal's
            # live table would be torn by it, anything else (a pipe, CI) wants it inline.
            to_file = live or log_path is not None
            configure_logging("info", "human", log_stream if to_file else sys.stderr)
            console.print(
                "ozw demo: a local dispatch server, a worker on the direct backend and "
                "the stand-in agent; Ctrl-C shows a graceful stop.",
                soft_wrap=True,
            )
            if to_file:
                kept = "" if log_path else " (removed at exit; --log-file keeps one)"
                console.print(f"worker log: {log_file}{kept}", soft_wrap=True)
            code = trio.run(
                functools.partial(
                    run_demo,
                    console,
                    live=live,
                    workdir=workdir,
                    metrics_addr=metrics_addr,
                )
            )
        logging.getLogger("ozw").handlers.clear()
    return code
