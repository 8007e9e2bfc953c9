"""An in-process dispatch server + worker, and a probe that timestamps a task's way.

Every timestamp is ``time.perf_counter()`` taken synchronously where the event
happens, in the one Trio thread that runs both the server and the worker:

- ``sent``: just before the server writes the ``task_assignment`` frame;
- ``claimed`` / ``terminal``: the server's receive hook, when it has read and
  decoded the worker's ``task_claimed`` / ``task_completed`` (or ``task_failed``);
- ``setup``, ``execute``: the worker's own task log lines "setup started" and
  "agent started" (a logging handler on the ``ozw`` logger);
- ``agent_first`` / ``agent_last``: the first and last line of the agent's stdout as
  the worker relays it into the task log (the agent is running once it has printed);
- ``reported``: the supervisor's ``on_reported`` hook, when the terminal message has
  been queued for the connection (before teardown on the docker backend, whose
  teardown only removes the finished container);
- ``finished``: the supervisor's ``on_finished`` hook, after teardown, when the slot
  is free again. :func:`run_one` waits for it too, so one task's removal never
  overlaps the next sample.
"""

from __future__ import annotations

import collections
import functools
import logging
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import attrs
import trio

from bench.stats import median, phase_medians
from ozw.backends.base import Backend
from ozw.config import BackendConfig, WorkerConfig
from ozw.dev.local import open_local_worker
from ozw.dev.server import DispatchServer, Received
from ozw.tasks.lifecycle import TaskOutcome
from ozw.tasks.params import TaskParams
from ozw.wire.codec import TaskAssignment, TaskClaimed, TaskCompleted, TaskFailed
from ozw.worker import Worker

T = TypeVar("T")

TASK_PHASES = ("sent", "setup", "execute", "agent_first", "agent_last", "reported", "terminal")
"""The marks of one task in the order they happen (``claimed`` and ``finished`` run beside
them)."""

STOP_WAIT = 30.0
"""How long the worker may take to stop after a benchmark."""

_LOG_MARKS = {"setup started": "setup", "agent started": "execute"}


class Probe(logging.Handler):
    """Per-task timestamps (see the module docstring), and waiting for them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.marks: collections.defaultdict[str, dict[str, float]] = collections.defaultdict(dict)
        self.failures: dict[str, str] = {}
        self._events: dict[tuple[str, str], trio.Event] = {}

    def mark(self, task_id: str, key: str, *, again: bool = False) -> None:
        marks = self.marks[task_id]
        if key in marks and not again:
            return
        marks[key] = time.perf_counter()
        event = self._events.pop((task_id, key), None)
        if event is not None:
            event.set()

    async def wait(self, task_id: str, key: str) -> float:
        """Wait for the mark; returns its time."""
        if key not in self.marks[task_id]:
            event = self._events.setdefault((task_id, key), trio.Event())
            await event.wait()
        return self.marks[task_id][key]

    # logging.Handler: runs synchronously where the worker logs, always in the one Trio
    # thread, so without the handler's lock; the probe's cost is not the worker's.
    def handle(self, record: logging.LogRecord) -> bool:
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        fields = record.__dict__
        task_id = fields.get("task_id")
        if task_id is None:
            return
        stream = fields.get("stream")
        if stream == "agent stdout":
            self.mark(task_id, "agent_first")
            self.mark(task_id, "agent_last", again=True)
            return
        # The marked lines have no arguments: their text is the message itself.
        key = _LOG_MARKS.get(record.msg) if stream is None and isinstance(record.msg, str) else None
        if key is not None:
            self.mark(task_id, key)

    def on_receive(self, item: Received) -> None:
        message = item.message
        if isinstance(message, TaskClaimed):
            self.mark(message.task_id, "claimed")
        elif isinstance(message, TaskCompleted | TaskFailed):
            if isinstance(message, TaskFailed):
                self.failures[message.task_id] = f"{message.failure_reason}: {message.message}"
            self.mark(message.task_id, "terminal")

    def on_reported(self, params: TaskParams, outcome: TaskOutcome) -> None:
        self.mark(params.task_id, "reported")

    def on_finished(self, params: TaskParams, outcome: TaskOutcome, duration: float) -> None:
        self.mark(params.task_id, "finished")


@dataclass
class Session:
    server: DispatchServer
    worker: Worker
    probe: Probe


async def with_worker(
    backend: Backend,
    backend_config: BackendConfig | None,
    body: Callable[[Session], Awaitable[T]],
    *,
    worker_id: str = "bench-worker",
    timings: dict[str, float] | None = None,
) -> T:
    """Run ``body`` against a connected worker (on ``backend``, configured by
    ``backend_config`` when the backend reads its table) and a local dispatch server
    on 127.0.0.1, then stop the worker gracefully. Production connection
    timings unless ``timings`` overrides some: no pings fire during a benchmark."""
    api_key = secrets.token_urlsafe(16)
    probe = Probe()
    server = DispatchServer(api_key)
    server.on_receive.append(probe.on_receive)
    config = WorkerConfig(worker_id=worker_id, api_key=api_key, shutdown_grace=10)
    if backend_config is not None:
        config = attrs.evolve(config, backend=backend_config)
    ozw_logger = logging.getLogger("ozw")
    saved = (ozw_logger.level, ozw_logger.handlers[:], ozw_logger.propagate)
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    ozw_logger.handlers[:] = [probe, warnings]
    ozw_logger.setLevel(logging.INFO)
    ozw_logger.propagate = False
    try:
        with trio.CancelScope() as stop_wait:
            async with open_local_worker(
                config,
                backend,
                server=server,
                timings=timings,
                flush_timeout=5,
                stop_reason="benchmark finished",
            ) as local:
                local.worker.supervisor.events.on_reported.append(probe.on_reported)
                local.worker.supervisor.events.on_finished.append(probe.on_finished)
                await server.wait_connected()
                try:
                    result = await body(Session(server, local.worker, probe))
                finally:
                    # Only the stop that follows is bounded, not the body.
                    stop_wait.deadline = trio.current_time() + STOP_WAIT
        return result
    finally:
        ozw_logger.setLevel(saved[0])
        ozw_logger.handlers[:] = saved[1]
        ozw_logger.propagate = saved[2]


async def run_one(session: Session, message: TaskAssignment) -> dict[str, float]:
    """Send one assignment, wait for its terminal message and its slot's release;
    returns the task's marks.

    Raises RuntimeError when the task failed."""
    probe, task_id = session.probe, message.task_id
    probe.mark(task_id, "sent")
    await session.server.send(message)
    await probe.wait(task_id, "terminal")
    await probe.wait(task_id, "finished")
    if task_id in probe.failures:
        raise RuntimeError(f"task {task_id} failed: {probe.failures[task_id]}")
    return probe.marks[task_id]


def task_phases(marks: list[dict[str, float]]) -> dict[str, float]:
    """Medians of the worker's phases over ``marks`` (see :data:`TASK_PHASES`)."""
    phases = {"sent → claimed (at the server)": median([m["claimed"] - m["sent"] for m in marks])}
    phases.update(phase_medians(marks, TASK_PHASES))
    phases["reported → slot free (teardown after the report)"] = median(
        [m["finished"] - m["reported"] for m in marks]
    )
    return phases


def run_trio(fn: Callable[[], Awaitable[T]]) -> T:
    """``trio.run`` with a typed result."""
    return trio.run(functools.partial(_call, fn))


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()
