"""``ozw demo``: the whole worker on this machine, with nothing to set up.

One Trio nursery holds a local dispatch server, a worker on the direct backend
(running the stand-in ``oz`` agent in a temporary workspace root) and a script of
sample tasks: some succeed, one fails, one is cancelled mid-run and one is
rejected because the worker is at capacity. Progress is shown live (a status view
on a terminal, plain lines otherwise) and a final table is printed.
"""

from __future__ import annotations

import functools
import logging
import secrets
import sys
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import IO

import attrs
import trio

from ozw.backends.direct import DirectBackend
from ozw.config import DirectConfig, WorkerConfig
from ozw.devserver import DispatchServer, Received
from ozw.local import open_local_worker
from ozw.logs import configure_logging
from ozw.protocol import (
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
        "demo-broken-build", "Investigate the broken build", "echo Building; sleep 1.5; exit 3"
    ),
    SampleTask("demo-long-refactor", "A long refactor", "echo Starting a long refactor; sleep 60"),
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
    return Path(__file__).resolve().parents[2] / "examples" / "agent" / "oz"


@attrs.define
class Row:
    task_id: str
    title: str
    state: str = "assigned"
    reason: str = ""
    exit_code: str = ""
    started: float | None = None
    ended: float | None = None

    @property
    def duration(self) -> str:
        if self.started is None:
            return ""
        end = self.ended if self.ended is not None else trio.current_time()
        return f"{end - self.started:.1f}s"


class StatusView:
    """Per-task status, redrawn in place on a terminal, one line per change otherwise."""

    def __init__(self, out: IO[str], *, live: bool) -> None:
        self.out = out
        self.live = live
        self.rows: dict[str, Row] = {}
        self._drawn = 0

    def add(self, sample: SampleTask) -> None:
        self.rows[sample.task_id] = Row(sample.task_id, sample.title)
        self._changed(sample.task_id)

    def on_message(self, item: Received) -> None:
        message = item.message
        row = self.rows.get(message.task_id)
        if row is None:
            return
        now = trio.current_time()
        match message:
            case TaskClaimed():
                row.state, row.started = "running", now
            case TaskRejected():
                row.state, row.reason = "rejected", message.reason
            case TaskCompleted(task_state="CANCELLED"):
                row.state, row.ended = "cancelled", now
            case TaskCompleted():
                row.state, row.ended = "completed", now
            case TaskFailed():
                row.state, row.ended, row.reason = "failed", now, message.failure_reason
                row.exit_code = "" if message.exit_code is None else str(message.exit_code)
        self._changed(message.task_id)

    def note(self, text: str) -> None:
        if not self.live:
            print(text, file=self.out, flush=True)

    def _changed(self, task_id: str) -> None:
        if self.live:
            self.redraw()
        else:
            row = self.rows[task_id]
            extra = ", ".join(
                x for x in (row.reason, row.exit_code and f"exit {row.exit_code}") if x
            )
            print(
                f"{row.task_id:<22} {row.state}{f' ({extra})' if extra else ''}",
                file=self.out,
                flush=True,
            )

    def redraw(self) -> None:
        lines = list(self.table())
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = len(lines)

    def table(self) -> Iterator[str]:
        header = ("task", "outcome", "reason", "exit", "duration")
        rows = [(r.task_id, r.state, r.reason, r.exit_code, r.duration) for r in self.rows.values()]
        widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=False)]
        for line in (header, *rows):
            yield "  ".join(
                str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)
            ).rstrip()


async def run_demo(
    out: IO[str], *, live: bool, workdir: Path, metrics_addr: str | None = None
) -> int:
    """Run the demo; returns the exit code (0, or 130 after a second Ctrl-C)."""
    api_key = secrets.token_urlsafe(16)
    view = StatusView(out, live=live)
    server = DispatchServer(api_key)
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
    async with (
        open_local_worker(
            config, backend, server=server, handle_signals=True, stop_reason="demo finished"
        ) as local,
        trio.open_nursery() as nursery,
    ):
        worker = local.worker
        view.note(f"dispatch server on {server.url}; worker connected")
        if worker.metrics_port is not None:
            view.note(f"metrics on http://127.0.0.1:{worker.metrics_port}/metrics")
        if live:
            nursery.start_soon(_tick, view)
        with trio.CancelScope() as script:
            nursery.start_soon(_stop_script_when, local.stopped, script)
            await _play(server, view, worker)
            worker.request_stop("demo finished")
        interrupted = script.cancelled_caught
        await local.stopped.wait()
        nursery.cancel_scope.cancel()
    exit_code = local.exit_code or 0
    if live:
        view.redraw()
    else:
        print("", file=out)
        for line in view.table():
            print(line, file=out)
    if interrupted:
        print(
            "\nStopped by a signal: running tasks were cancelled, their teardown ran and "
            "each was reported as graceful_shutdown.",
            file=out,
        )
    out.flush()
    return exit_code


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
            id=sample.task_id, title=sample.title, raw={"id": sample.task_id, "title": sample.title}
        ),
        execution_id=f"exec-{sample.task_id}",
        env_vars={"OZ_STANDIN_PROMPT": sample.prompt},
    )


async def _play(server: DispatchServer, view: StatusView, worker: Worker) -> None:
    fix, broken, long, extra, docs = SAMPLES
    for sample in (fix, broken, long):
        view.add(sample)
        await server.send(_assignment(sample))
    await server.wait_for(lambda m: isinstance(m, TaskClaimed) and m.task_id == long.task_id)
    # Three tasks run: the fourth is one too many.
    view.add(extra)
    await server.send(_assignment(extra))
    await server.wait_for(lambda m: isinstance(m, TaskRejected))
    # Let the long task really start before the server cancels it.
    await trio.sleep(1.5)
    view.note(f"server cancels {long.task_id}")
    await server.send(TaskCancellation(long.task_id))
    await server.wait_for(
        lambda m: m.task_id == fix.task_id and isinstance(m, TaskCompleted | TaskFailed)
    )
    view.add(docs)
    await server.send(_assignment(docs))
    claimed = [row.task_id for row in view.rows.values() if row.state != "rejected"]
    await server.wait_until(
        lambda: all(view.rows[t].state not in ("assigned", "running") for t in claimed)
    )
    await worker.outbox.wait_empty()


def demo_main(*, log_path: str | None = None, metrics_addr: str | None = None) -> int:
    """The ``ozw demo`` command."""
    out = sys.stdout
    live = out.isatty()
    with tempfile.TemporaryDirectory(prefix="ozw-demo-") as tmp:
        workdir = Path(tmp)
        log_file = Path(log_path) if log_path else workdir / "worker.log"
        with open(log_file, "a", encoding="utf-8") as log_stream:
            if live:
                configure_logging("info", "human", log_stream)
            else:
                configure_logging("info", "human", sys.stderr)
            print(
                "ozw demo: a local dispatch server, a worker on the direct backend and "
                "the stand-in agent; Ctrl-C shows a graceful stop.",
                file=out,
                flush=True,
            )
            if live:
                kept = "" if log_path else " (removed at exit; --log-file keeps one)"
                print(f"worker log: {log_file}{kept}", file=out, flush=True)
            code = trio.run(
                functools.partial(
                    run_demo, out, live=live, workdir=workdir, metrics_addr=metrics_addr
                )
            )
        logging.getLogger("ozw").handlers.clear()
    return code
