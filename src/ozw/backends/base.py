"""The backend contract.

A backend is anyio-compatible: plain ``async`` methods, no Trio-only calls, so it
runs under Trio (and could under asyncio). It never sees the connection or the wire
types: it gets :class:`~ozw.tasks.params.TaskParams` and either returns an
:class:`ExecuteResult` or raises :class:`~ozw.tasks.failures.TaskFailure`.

The lifecycle drives one :class:`TaskRun` per task::

    run = backend.open_task(params, log)
    await run.setup()        # cancellable: image, sidecars, workspace, setup script
    await run.execute()      # cancellable: the agent; COMPLETED or HANDED_OFF
    await run.teardown()     # always, once setup started; shielded, with a deadline

The terminal message is queued after teardown, or before it when the run's
:attr:`TaskRun.teardown_after_report` says its teardown only releases what the result
no longer needs; the slot is held until teardown has ended either way.

Cancellation is the caller's cancel scope: a backend stops its child processes /
containers when cancelled and re-raises. :meth:`Backend.cancel` exists only for
work that lives outside this process (the command backend's hand-offs).

What backends share (environment rules, process groups, scripts, time limits) is in
:mod:`ozw.backends.execution`; :class:`ProcessBackend` is the base of the backends
whose work runs as child processes of the worker.
"""

from __future__ import annotations

import abc
import enum
import os
from collections.abc import Mapping
from types import TracebackType
from typing import ClassVar, Self, TypedDict, Unpack

import anyio

from ozw.backends.execution import ProcessRunner
from ozw.tasks.deadlines import BACKEND_CLOSE_TIMEOUT
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog


class ExecuteResult(enum.Enum):
    """How a task's execution ended when it did not fail."""

    COMPLETED = "completed"
    """The agent ran and exited 0: report ``task_completed``."""
    HANDED_OFF = "handed_off"
    """Another runtime took the task and reports for itself: no terminal message."""


class TaskRun(abc.ABC):
    """One task on one backend."""

    teardown_after_report: ClassVar[bool] = False
    """True when teardown only releases resources (removing a finished container): the
    server may hear the result before it starts. False when teardown still belongs to
    the task (a teardown script) and must end before the result is reported."""

    def __init__(self, params: TaskParams, log: TaskLog) -> None:
        self.params = params
        self.log = log

    @abc.abstractmethod
    async def setup(self) -> None:
        """Prepare everything the agent needs. Raises TaskFailure."""

    @abc.abstractmethod
    async def execute(self) -> ExecuteResult:
        """Run the agent to its end. Raises TaskFailure."""

    @abc.abstractmethod
    async def teardown(self) -> None:
        """Undo setup. Runs shielded under the backend's teardown deadline; its
        failure is logged by the caller and never changes the task's result."""


class WorkerSettings(TypedDict, total=False):
    """What every backend may take from the worker besides its own table."""

    worker_id: str
    """Labels what the backend creates, so an earlier run's leftovers are found again."""
    cleanup: bool
    """Remove what a task made once it ends (off keeps it for debugging); default on."""
    environ: Mapping[str, str] | None
    """The worker's environment (default ``os.environ``)."""


class Backend(abc.ABC):
    """A way of running tasks; one instance per worker."""

    name: ClassVar[str]
    tasks_survive_shutdown: ClassVar[bool] = False
    """True when a task, once handed off, lives on after the worker stops."""

    teardown_timeout: float = 300.0
    """The deadline of one task's teardown."""

    reattaches: bool = False
    """True when a task stopped by the worker's shutdown lives on (a Kubernetes Job) and
    the next start of this worker adopts it: the shutdown reports nothing for it."""

    def __init__(self, **settings: Unpack[WorkerSettings]) -> None:
        self.worker_id = settings.get("worker_id", "")
        self.cleanup = settings.get("cleanup", True)
        environ = settings.get("environ")
        self.environ: dict[str, str] = dict(os.environ if environ is None else environ)
        """The worker's environment (default ``os.environ``), read once here: configured
        entries without value inherit from it, and child processes get parts of it."""

    async def check(self) -> str:
        """Start-up check, without side effects (``ozw check`` runs it beside a live
        worker). Returns what it found, in a few words for the operator (``docker
        20.10.24 on linux/amd64``). Raises BackendUnavailable with one line."""
        return "ready"

    async def recover(self) -> None:
        """At start-up, after :meth:`check`: clean up what a crashed earlier run of this
        worker left behind (e.g. labelled containers)."""

    @abc.abstractmethod
    def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
        """Create the run of one task (no I/O here)."""

    def reattached(self) -> list[TaskParams]:
        """Tasks an earlier run of this worker left running, found by :meth:`recover`:
        the supervisor adopts each (a slot, watched to its end, reported)."""
        return []

    def detach(self) -> None:
        """The worker stops gracefully and :attr:`reattaches`: leave running work alone."""

    async def cancel(self, params: TaskParams) -> None:
        """Best-effort cancel of work living elsewhere (after a hand-off)."""

    async def kill_all(self) -> None:
        """Second Ctrl-C: stop every agent and script of this backend at once, no grace."""

    async def aclose(self) -> None:
        """Release what the backend holds (e.g. lingering workspaces) at shutdown."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Clean-up runs even when the surrounding scope is cancelled, but not for ever.
        with anyio.move_on_after(BACKEND_CLOSE_TIMEOUT, shield=True):
            await self.aclose()


class ProcessBackend(Backend):
    """A backend whose work runs as child processes of the worker (agents, scripts,
    CLIs), all started through one :class:`~ozw.backends.execution.ProcessRunner`.

    Args:
        kill_grace: the pause between SIGTERM and SIGKILL when a child is stopped.
        settings: the worker's (:class:`WorkerSettings`).
    """

    def __init__(self, *, kill_grace: float, **settings: Unpack[WorkerSettings]) -> None:
        super().__init__(**settings)
        self.runner = ProcessRunner(kill_grace=kill_grace)

    async def kill_all(self) -> None:
        """SIGKILL every process group this backend started, now."""
        self.runner.kill_all()
