"""The direct backend proper: :class:`DirectBackend`, the owner of the workspaces.

It resolves the ``oz`` CLI, prepares the workspace root, stops and sweeps what a dead
run left, and opens one :class:`~ozw.backends.direct.task.DirectTaskRun` per task.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from typing import ClassVar, Unpack

import anyio

from ozw.backends.base import ProcessBackend, WorkerSettings
from ozw.backends.direct.task import DirectTaskRun
from ozw.backends.direct.workspace import (
    PRIVATE_PREFIX,
    Workspace,
    WorkspaceError,
    create_private_workspace,
    create_task_workspace,
    prepare_root,
    release_workspace,
    sweep_root,
    sweep_unlocked,
)
from ozw.backends.execution import (
    ProcessLedger,
    stop_leftovers,
)
from ozw.config import DirectConfig
from ozw.tasks.deadlines import WORKSPACE_REMOVAL_MARGIN
from ozw.tasks.failures import BackendUnavailable, FailureReason, TaskFailure
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog

logger = logging.getLogger(__name__)


def oz_candidate(oz_path: str | None, search_path: str | None) -> str | None:
    """The ``oz`` CLI to run: ``oz_path`` (made absolute: the agent runs in the workspace),
    a bare command name looked up on ``search_path``, or ``oz`` on it; None when not found."""
    name = oz_path or "oz"
    if os.sep in name:
        return os.path.abspath(name)
    found = shutil.which(name, path=search_path)
    return os.path.abspath(found) if found is not None else None


def executable_problem(path: str) -> str | None:
    """Why ``path`` cannot be run as the oz CLI, or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"{path} cannot be inspected: {exc.strerror or exc}"
    if stat.S_ISDIR(mode):
        return f"{path} is a directory, not the oz CLI"
    if not os.access(path, os.X_OK) or not mode & 0o111:
        return f"{path} is not executable"
    return None


class DirectBackend(ProcessBackend):
    """Runs the ``oz`` CLI on the host (docs/protocol.md, "direct").

    Args:
        config: the ``[backend.direct]`` table.
        cleanup: remove workspaces after each task and at shutdown (off for debugging).
        environ: the worker's environment (default ``os.environ``), read at construction.
    """

    name: ClassVar[str] = "direct"

    def __init__(self, config: DirectConfig, **settings: Unpack[WorkerSettings]) -> None:
        super().__init__(kill_grace=config.kill_grace, **settings)
        self.config = config
        # The script gets teardown_timeout; the kill sequence and removal need room too.
        self.teardown_timeout = (
            config.teardown_timeout + 2 * config.kill_grace + WORKSPACE_REMOVAL_MARGIN
        )
        self._oz: str | None = None
        self._private_parent: str | None = None
        """With ``target_dir``, where the tasks' private directories go (set at start-up)."""
        self._workspaces: dict[str, Workspace] = {}

    @property
    def active_workspaces(self) -> frozenset[str]:
        """Paths of the workspaces of tasks not yet torn down."""
        return frozenset(w.path for w in self._workspaces.values())

    async def check(self) -> str:
        """Start-up check: the oz CLI runs, and the workspace root or target_dir is usable."""
        return await anyio.to_thread.run_sync(self._check)

    def _check(self) -> str:
        self._oz = self._resolve_oz()
        if self.config.target_dir:
            target = self.config.target_dir
            if not os.path.exists(target):
                raise BackendUnavailable(f"direct backend: target_dir {target} does not exist")
            if not os.path.isdir(target):
                raise BackendUnavailable(f"direct backend: target_dir {target} is not a directory")
            return f"oz CLI {self._oz}; every task in {target}"
        root = self.config.workspace_root
        try:
            prepare_root(root)
        except OSError as exc:
            raise BackendUnavailable(
                f"direct backend: cannot use workspace root {root}: {exc.strerror or exc}"
            ) from exc
        if not os.access(root, os.W_OK | os.X_OK):
            raise BackendUnavailable(f"direct backend: workspace root {root} is not writable")
        return f"oz CLI {self._oz}; workspaces in {root}"

    def _resolve_oz(self) -> str:
        """The oz CLI's absolute path. Raises BackendUnavailable."""
        path = oz_candidate(self.config.oz_path, self.environ.get("PATH"))
        if path is None:
            if self.config.oz_path:
                raise BackendUnavailable(
                    f"direct backend: oz_path {self.config.oz_path!r} is not on PATH"
                )
            raise BackendUnavailable(
                "direct backend: no `oz` on PATH; install the Oz CLI or set oz_path"
            )
        problem = executable_problem(path)
        if problem is not None:
            raise BackendUnavailable(f"direct backend: oz CLI {problem}")
        return path

    def oz_command(self) -> str:
        """The resolved oz CLI (resolved now when :meth:`check` did not run). Raises TaskFailure."""
        if self._oz is None:
            try:
                self._oz = self._resolve_oz()
            except BackendUnavailable as exc:
                raise TaskFailure(FailureReason.AGENT_INVOCATION, str(exc)) from exc
        return self._oz

    def open_task(self, params: TaskParams, log: TaskLog) -> DirectTaskRun:
        """The run of one task (no I/O yet)."""
        return DirectTaskRun(self, params, log)

    async def recover(self) -> None:
        """At start-up: stop the process groups a dead run of a worker left in this
        root (its abandoned ledger), then (cleanup on) sweep the workspaces it left, then
        start this worker's own ledger. In that order: a leftover agent must be gone
        before its workspace is removed or reused."""
        directory = await anyio.to_thread.run_sync(self._state_dir)
        if directory is None:
            return
        if self.config.target_dir:
            self._private_parent = directory
        await stop_leftovers(directory, self.config.kill_grace)
        await self._sweep()
        try:
            self.runner.ledger = ProcessLedger.open(directory)
        except OSError as exc:
            logger.warning(
                "cannot record this worker's processes in %s (%s): agents left by a crash "
                "will not be stopped at the next start",
                directory,
                exc.strerror or exc,
            )

    def _state_dir(self) -> str | None:
        """Where the process ledgers live: the workspace root, or with ``target_dir`` a
        private directory of this user's under the temporary directory (which then also
        holds the tasks' private directories)."""
        if not self.config.target_dir:
            return self.config.workspace_root
        path = os.path.join(tempfile.gettempdir(), f"ozw-direct-{os.getuid()}")
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
            info = os.lstat(path)
        except OSError as exc:
            logger.warning("cannot use %s for process records: %s", path, exc.strerror or exc)
            return None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            logger.warning("not using %s for process records: not a private directory", path)
            return None
        return path

    async def _sweep(self) -> None:
        """Remove the workspaces nobody holds in an ozw-owned root (cleanup on), and with
        ``target_dir`` the private directories nobody holds (always: they hold the
        environment files of tasks, and are removed after every task anyway)."""
        if self.config.target_dir:
            if self._private_parent is not None:
                with contextlib.suppress(OSError):
                    swept = await anyio.to_thread.run_sync(
                        sweep_unlocked, self._private_parent, PRIVATE_PREFIX
                    )
                    for path in swept:
                        logger.info("removed leftover private directory %s", path)
        elif self.cleanup:
            root = self.config.workspace_root
            with contextlib.suppress(OSError):
                for path in await anyio.to_thread.run_sync(sweep_root, root):
                    logger.info("removed leftover workspace %s", path)

    async def aclose(self) -> None:
        """Remove lingering workspaces (see the module docstring) unless cleanup is off;
        drop this worker's process ledger."""
        with anyio.CancelScope(shield=True):
            for workspace in list(self._workspaces.values()):
                if (problem := await self.release(workspace)) is not None:
                    logger.warning("%s", problem)
            await self._sweep()
            if self.runner.ledger is not None:
                self.runner.ledger.close()
                self.runner.ledger = None

    # -- used by DirectTaskRun

    async def open_workspace(self, params: TaskParams) -> Workspace:
        """Create the task's workspace. Raises TaskFailure(workspace_setup)."""
        if params.task_id in self._workspaces:
            raise TaskFailure(
                FailureReason.WORKSPACE_SETUP, f"task {params.task_id!r} is already running here"
            )
        try:
            if self.config.target_dir:
                workspace = await anyio.to_thread.run_sync(
                    create_private_workspace,
                    self.config.target_dir,
                    params.task_id,
                    params.harness,
                    self._private_parent,
                )
            else:
                workspace = await anyio.to_thread.run_sync(
                    create_task_workspace,
                    self.config.workspace_root,
                    params.task_id,
                    params.harness,
                )
        except WorkspaceError as exc:
            raise TaskFailure(FailureReason.WORKSPACE_SETUP, str(exc)) from exc
        self._workspaces[params.task_id] = workspace
        return workspace

    async def release(self, workspace: Workspace) -> str | None:
        """Remove a task's files (workspace per ``cleanup``); what failed, or None."""
        self._workspaces.pop(workspace.task_id, None)
        try:
            await anyio.to_thread.run_sync(
                lambda: release_workspace(workspace, remove=self.cleanup)
            )
        except OSError as exc:
            return f"cannot remove workspace {workspace.path}: {exc.strerror or exc}"
        return None
