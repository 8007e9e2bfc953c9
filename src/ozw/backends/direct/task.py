"""One task of the direct backend: :class:`DirectTaskRun`.

::

    setup     the task's workspace (its backend makes it), ``setup_command`` in it,
              then the agent's environment (the file the script wrote included)
    execute   ``<oz> <base args>`` in the workspace; exit 0 completes the task
    teardown  ``teardown_command`` (bounded), then the task's files removed
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from ozw.backends.base import ExecuteResult, TaskRun
from ozw.backends.direct.rules import (
    agent_environment,
    forced_agent_variables,
    host_environment,
    script_environment,
    script_variables,
)
from ozw.backends.direct.workspace import Workspace, read_env_file
from ozw.backends.execution import (
    ScriptResult,
    configured_environment,
    require_valid_environment,
    run_script,
)
from ozw.config import DirectConfig
from ozw.tasks.failures import FailureReason, TaskFailure, describe_exit
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog

if TYPE_CHECKING:
    from ozw.backends.direct.backend import DirectBackend


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

    def _configured(self, *, values: bool = True) -> dict[str, str]:
        entries = self._config.environment
        if not values:
            # Configured values are the agent's and the setup's, not teardown's (the Go
            # worker's rule); a name listed without value still opts a worker variable
            # in (``WARP_API_KEY`` for one).
            entries = tuple(entry for entry in entries if entry.value is None)
        return configured_environment(entries, self.backend.environ)

    def _script_env(self, workspace: Workspace, *, setup: bool) -> dict[str, str]:
        oz = script_variables(
            workspace=workspace.path,
            run_id=self.params.run_id,
            gitconfig=workspace.gitconfig,
            env_file=workspace.env_file if setup else None,
        )
        # Teardown gets no task variables nor configured values (the Go worker's rule): it
        # often runs git in a workspace the agent controlled, where secrets have no business.
        return script_environment(
            worker=self.backend.environ,
            task=self.params.env if setup else {},
            configured=self._configured(values=setup),
            oz=oz,
        )

    async def setup(self) -> None:
        """Create the workspace, run ``setup_command``, build the agent's environment."""
        workspace = self.workspace = await self.backend.open_workspace(self.params)
        self.log.info("workspace %s", workspace.path)
        env_file: dict[str, str] = {}  # the workspace starts it empty
        if self._config.setup_command:
            await self._run_setup_command(self._config.setup_command, workspace)
            env_file = await self._read_env_file(workspace)
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

    async def _read_env_file(self, workspace: Workspace) -> dict[str, str]:
        """What the setup command wrote to the environment file."""
        try:
            return await anyio.to_thread.run_sync(read_env_file, workspace.env_file)
        except FileNotFoundError:
            self.log.warning("setup command removed the environment file %s", workspace.env_file)
            return {}
        except (OSError, ValueError) as exc:
            raise TaskFailure(
                FailureReason.SETUP_COMMAND, f"cannot read the environment file: {exc}"
            ) from exc

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
