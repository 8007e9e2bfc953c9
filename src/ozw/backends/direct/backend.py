"""The direct backend proper: :class:`DirectBackend` and :class:`DirectTaskRun`."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from typing import ClassVar

import anyio

from ozw.backends.base import ExecuteResult, ProcessBackend, TaskRun
from ozw.backends.direct.rules import (
    agent_environment,
    executable_problem,
    forced_agent_variables,
    host_environment,
    oz_candidate,
    script_environment,
    script_variables,
)
from ozw.backends.direct.workspace import (
    PRIVATE_PREFIX,
    Workspace,
    WorkspaceError,
    create_private_workspace,
    create_task_workspace,
    prepare_root,
    read_env_file,
    release_workspace,
    sweep_root,
    sweep_unlocked,
)
from ozw.backends.execution import (
    ProcessLedger,
    ScriptResult,
    configured_environment,
    require_valid_environment,
    run_script,
    stop_leftovers,
)
from ozw.config import DirectConfig
from ozw.tasks.deadlines import WORKSPACE_REMOVAL_MARGIN
from ozw.tasks.failures import BackendUnavailable, FailureReason, TaskFailure, describe_exit
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog

logger = logging.getLogger(__name__)


class DirectBackend(ProcessBackend):
    """Runs the ``oz`` CLI on the host (docs/protocol.md, "direct").

    Args:
        config: the ``[backend.direct]`` table.
        cleanup: remove workspaces after each task and at shutdown (off for debugging).
        environ: the worker's environment (default ``os.environ``), read at construction.
    """

    name: ClassVar[str] = "direct"

    def __init__(
        self,
        config: DirectConfig,
        *,
        cleanup: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(kill_grace=config.kill_grace, environ=environ)
        self.config = config
        self.cleanup = cleanup
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


class DirectTaskRun(TaskRun):
    """One task of the direct backend: workspace + setup script, agent, teardown script."""

    def __init__(self, backend: DirectBackend, params: TaskParams, log: TaskLog) -> None:
        super().__init__(params, log)
        self.backend = backend
        self.workspace: Workspace | None = None
        self.agent_env: dict[str, str] | None = None
        self._torn_down = False

    @property
    def _config(self) -> DirectConfig:
        return self.backend.config

    def _configured(self) -> dict[str, str]:
        return configured_environment(self._config.environment, self.backend.environ)

    def _script_env(self, workspace: Workspace, *, setup: bool) -> dict[str, str]:
        oz = script_variables(
            workspace=workspace.path,
            run_id=self.params.run_id,
            gitconfig=workspace.gitconfig,
            env_file=workspace.env_file if setup else None,
        )
        # Teardown gets no task variables (the Go worker's rule): it often runs git in a
        # workspace the agent controlled, where the task's secrets have no business.
        return script_environment(
            worker=self.backend.environ,
            task=self.params.env if setup else {},
            configured=self._configured(),
            oz=oz,
        )

    async def setup(self) -> None:
        """Create the workspace, run ``setup_command``, build the agent's environment."""
        workspace = self.workspace = await self.backend.open_workspace(self.params)
        self.log.info("workspace %s", workspace.path)
        if self._config.setup_command:
            await self._run_setup_command(self._config.setup_command, workspace)
        try:
            env_file = await anyio.to_thread.run_sync(read_env_file, workspace.env_file)
        except FileNotFoundError:
            self.log.warning("setup command removed the environment file %s", workspace.env_file)
            env_file = {}
        except (OSError, ValueError) as exc:
            raise TaskFailure(
                FailureReason.SETUP_COMMAND, f"cannot read the environment file: {exc}"
            ) from exc
        forced = forced_agent_variables(
            gitconfig=workspace.gitconfig,
            harness=self.params.harness,
            private_dir=workspace.private_dir,
        )
        ignored = sorted(env_file.keys() & forced.keys())
        if ignored:
            self.log.warning("environment file cannot override %s; ignored", ", ".join(ignored))
        env = agent_environment(
            host=host_environment(self.backend.environ),
            task=self.params.env,
            configured=self._configured(),
            env_file=env_file,
            forced=forced,
        )
        require_valid_environment(env, FailureReason.AGENT_INVOCATION, "the agent")
        self.agent_env = env

    async def _run_workspace_script(
        self, command: str, workspace: Workspace, *, setup: bool
    ) -> ScriptResult:
        """Run the setup or teardown script in the workspace. Raises TaskFailure when its
        environment holds a variable no process can receive."""
        label, reason, timeout = (
            ("setup", FailureReason.SETUP_COMMAND, self._config.setup_timeout)
            if setup
            else ("teardown", FailureReason.TEARDOWN_COMMAND, self._config.teardown_timeout)
        )
        env = self._script_env(workspace, setup=setup)
        require_valid_environment(env, reason, f"the {label} command")
        return await run_script(
            self.backend.runner,
            command,
            what=f"{label} command",
            label=label,
            log=self.log,
            env=env,
            timeout=timeout,
            cwd=workspace.path,
        )

    async def _run_setup_command(self, command: str, workspace: Workspace) -> None:
        result = await self._run_workspace_script(command, workspace, setup=True)
        if not result.ok:
            raise result.failure(FailureReason.SETUP_COMMAND)

    async def execute(self) -> ExecuteResult:
        """Run ``<oz> <base args>`` in the workspace; exit 0 completes the task."""
        if self.workspace is None or self.agent_env is None:
            raise RuntimeError("execute() called before a successful setup()")
        oz = self.backend.oz_command()
        try:
            code = await self.backend.runner.run(
                [oz, *self.params.base_args],
                log=self.log,
                label="agent",
                env=self.agent_env,
                cwd=self.workspace.path,
            )
        except OSError as exc:
            raise TaskFailure(
                FailureReason.AGENT_INVOCATION,
                f"could not start the agent {oz}: {exc.strerror or exc}",
            ) from exc
        if code != 0:
            raise TaskFailure(
                FailureReason.AGENT_INVOCATION,
                f"agent exited with {describe_exit(code)}",
                exit_code=code,
            )
        return ExecuteResult.COMPLETED

    async def teardown(self) -> None:
        """Run ``teardown_command`` (bounded), then remove the task's files (removal runs
        even when the script failed). Raises TaskFailure(teardown_command) naming every
        step that failed; the lifecycle logs and counts it, never changing the result."""
        if self._torn_down or self.workspace is None:
            return  # nothing was created, or already done
        self._torn_down = True
        workspace = self.workspace
        problems: list[str] = []
        try:
            if (problem := await self._run_teardown_command(workspace)) is not None:
                problems.append(problem)
        finally:
            with anyio.CancelScope(shield=True):
                if (problem := await self.backend.release(workspace)) is not None:
                    problems.append(problem)
        if problems:
            raise TaskFailure(FailureReason.TEARDOWN_COMMAND, "; ".join(problems))

    async def _run_teardown_command(self, workspace: Workspace) -> str | None:
        """Run ``teardown_command``; what went wrong, or None."""
        command = self._config.teardown_command
        if not command:
            return None
        try:
            result = await self._run_workspace_script(command, workspace, setup=False)
        except TaskFailure as exc:
            return exc.cause
        return None if result.ok else result.describe()
