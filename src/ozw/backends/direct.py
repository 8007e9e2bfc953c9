"""The direct backend: the ``oz`` CLI on the host, one workspace per task (PROTOCOL.md 5).

Each task gets ``<workspace_root>/<task id>`` (0700), or, with ``target_dir``, runs in
that shared directory, which is never removed. Git's global config is redirected per
task (``GIT_CONFIG_GLOBAL``), an empty environment file is handed to ``setup_command``
and whatever dotenv lines it writes there reach the agent.

Environment of the agent (later layers win; see :func:`agent_environment`):

1. ``HOME``, ``TMPDIR``, ``PATH`` of the worker (only these: ``WARP_API_KEY`` and every
   other worker variable stay out);
2. the task environment (``TaskParams.env``);
3. the backend's configured ``environment`` (an entry without value inherits the
   worker's variable and is skipped when the worker has none);
4. the environment file written by ``setup_command`` (python-dotenv, no ``${VAR}``
   interpolation: the script's shell already expands what it wants, and the result must
   not depend on the worker's own ``os.environ``);
5. forced, never overridable: ``GIT_CONFIG_GLOBAL``, and ``CLAUDE_CONFIG_DIR`` /
   ``CODEX_HOME`` for the ``claude`` / ``codex`` harness.

Environment of ``setup_command`` / ``teardown_command`` (``/bin/sh -c``, cwd the
workspace; see :func:`script_environment`): the worker's environment *without*
``WARP_API_KEY`` (the worker's own Oz credential; the rule of every child,
:func:`ozw.backends.execution.inherited_environment`:
teardown often runs git in a workspace the agent controlled, where ``core.fsmonitor``
and the like can run code the agent chose), the task environment, the configured
``environment`` (listing ``WARP_API_KEY`` there is the deliberate opt-in; it then
reaches the agent too, like every configured entry), then ``OZ_WORKSPACE_ROOT`` (the
task's workspace), ``OZ_WORKER_BACKEND=direct``, ``OZ_RUN_ID``, ``GIT_CONFIG_GLOBAL``
and, for setup only, ``OZ_ENVIRONMENT_FILE``.

A variable no process can receive (see :mod:`ozw.backends.execution.environment`)
fails the task: ``setup_command`` for the setup script's environment,
``agent_invocation`` for the agent's.

Choices where the contract is silent:

- Task ids are validated in ``target_dir`` mode too (same rule everywhere).
- With ``target_dir``, everything per task (git config, environment file, harness
  config directories) lives in a private ``mkdtemp`` directory outside ``target_dir``,
  removed at teardown whatever ``cleanup`` says: concurrent tasks must not share them
  and the operator's directory must not collect our files. Its name carries the task
  id when short, else a hash of it, so any id a per-task workspace accepts works here.
- A workspace that already exists for a new task is a leftover of an earlier run:
  replaced by a fresh one when cleanup is on and the root carries :data:`ROOT_MARKER`
  (below), refused (``workspace_setup``) otherwise: cleanup off means ozw never deletes
  a workspace, and in a root ozw does not own the directory is the operator's
  (``<path> exists and is not an ozw workspace``). A workspace in use by another worker
  process (see locking below) is always refused.
- Every live workspace directory is ``flock``-ed by the worker that owns it. At
  shutdown (:meth:`DirectBackend.aclose`, cleanup on) the backend removes the
  workspaces it created plus every unlocked directory left in the root by a crashed
  run, but only when the root carries the marker file :data:`ROOT_MARKER`, which is
  written when ozw created the root or found it empty: a misconfigured root holding
  the operator's own files is never swept, and workers sharing a root never remove
  each other's live workspaces.
- The teardown script gets ``teardown_timeout``; :attr:`DirectBackend.teardown_timeout`
  (the caller's outer deadline) adds room for the kill sequence and file removal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import ClassVar, Final, TypeAlias

import anyio
import attrs
from dotenv import dotenv_values

from ozw.backends.base import ExecuteResult, ProcessBackend, TaskRun
from ozw.backends.execution import (
    configured_environment,
    inherited_environment,
    layered_environment,
    require_valid_environment,
    run_script,
)
from ozw.config import DirectConfig
from ozw.failures import BackendUnavailable, FailureReason, TaskFailure, describe_exit
from ozw.logs import TaskLog
from ozw.params import TaskParams

logger = logging.getLogger("ozw.backends.direct")

ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType]

HOST_VARIABLES: Final = ("HOME", "TMPDIR", "PATH")
"""The only worker variables the agent inherits."""
GITCONFIG_NAME: Final = ".gitconfig"
ENV_FILE_NAME: Final = ".oz.env"
ROOT_MARKER: Final = ".ozw-workspaces"
"""Present in a workspace root that ozw owns; only such a root is swept at shutdown."""
HARNESS_HOMES: Final[Mapping[str, tuple[str, str]]] = {
    "claude": ("CLAUDE_CONFIG_DIR", ".claude"),
    "codex": ("CODEX_HOME", ".codex"),
}
"""Harness → (variable, directory name inside the task's private directory)."""
TEARDOWN_MARGIN: Final = 60.0
"""Extra outer teardown time for removing a (possibly large) workspace."""
PRIVATE_DIR_ID_MAX: Final = 64
"""Longer task ids are hashed in the name of a ``target_dir`` task's private directory."""


# --------------------------------------------------------------------------- rules


def task_id_problem(task_id: str) -> str | None:
    """Why ``task_id`` cannot name a workspace directory, or None when it can."""
    if task_id in ("", ".", ".."):
        return f"task id {task_id!r} cannot be used as a workspace name"
    for char in ("/", "\\", "\0"):
        if char in task_id:
            return f"task id {task_id!r} contains {char!r} and cannot be used as a workspace name"
    return None


def private_dir_label(task_id: str) -> str:
    """The task id as it appears in a ``target_dir`` task's private directory name: the
    id itself when short, else a hash (the prefix and mkdtemp's suffix must still fit in
    the file system's name limit for every id a per-task workspace accepts)."""
    if len(task_id.encode("utf-8", "surrogatepass")) <= PRIVATE_DIR_ID_MAX:
        return task_id
    return "sha256-" + hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def is_direct_child(path: str, root: str) -> bool:
    """Whether the (already resolved) ``path`` is an entry of the (resolved) ``root``."""
    parent, name = os.path.split(path)
    return parent == root and name not in ("", ".", "..")


def host_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the worker's environment the agent inherits."""
    return {name: environ[name] for name in HOST_VARIABLES if name in environ}


def harness_home(harness: str | None) -> tuple[str, str] | None:
    """(variable, directory name) of a third-party harness's config home, if it has one."""
    if harness is None:
        return None
    return HARNESS_HOMES.get(harness.strip().lower())


def agent_environment(
    *,
    host: Mapping[str, str],
    task: Mapping[str, str],
    configured: Mapping[str, str],
    env_file: Mapping[str, str],
    forced: Mapping[str, str],
) -> dict[str, str]:
    """The agent's environment: the five layers of the module docstring, in order."""
    return layered_environment(
        inherited=host, task=task, configured=configured, overrides=env_file, forced=forced
    )


def script_environment(
    *,
    worker: Mapping[str, str],
    task: Mapping[str, str],
    configured: Mapping[str, str],
    oz: Mapping[str, str],
) -> dict[str, str]:
    """A setup/teardown script's environment: the worker's (without ``WARP_API_KEY``),
    the task's, configured, ``OZ_*``. See the module docstring."""
    return layered_environment(
        inherited=inherited_environment(worker), task=task, configured=configured, forced=oz
    )


def script_variables(
    *,
    workspace: str,
    run_id: str,
    gitconfig: str,
    env_file: str | None = None,
) -> dict[str, str]:
    """The variables ozw gives setup (with ``env_file``) and teardown scripts."""
    variables = {
        "OZ_WORKSPACE_ROOT": workspace,
        "OZ_WORKER_BACKEND": "direct",
        "OZ_RUN_ID": run_id,
        "GIT_CONFIG_GLOBAL": gitconfig,
    }
    if env_file is not None:
        variables["OZ_ENVIRONMENT_FILE"] = env_file
    return variables


def forced_agent_variables(
    *, gitconfig: str, harness: str | None, private_dir: str
) -> dict[str, str]:
    """The variables nothing can override: git's global config and the harness home."""
    forced = {"GIT_CONFIG_GLOBAL": gitconfig}
    home = harness_home(harness)
    if home is not None:
        variable, dirname = home
        forced[variable] = os.path.join(private_dir, dirname)
    return forced


def dotenv_mapping(values: Mapping[str, str | None]) -> dict[str, str]:
    """python-dotenv's result without the bare ``NAME`` lines (which carry no value)."""
    return {name: value for name, value in values.items() if value is not None}


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


# --------------------------------------------------------------------- filesystem


class WorkspaceError(Exception):
    """A workspace could not be created; the message is for people."""


@attrs.define
class Workspace:
    """Where one task runs and keeps its private files."""

    task_id: str
    path: str
    """The agent's and the scripts' working directory."""
    private_dir: str
    """Holds the git config, the environment file and harness homes."""
    owned: bool
    """True for a per-task workspace under the root (removed at teardown with cleanup)."""
    lock_fd: int | None = None

    @property
    def gitconfig(self) -> str:
        return os.path.join(self.private_dir, GITCONFIG_NAME)

    @property
    def env_file(self) -> str:
        return os.path.join(self.private_dir, ENV_FILE_NAME)


def prepare_root(root: str) -> None:
    """Create the workspace root (0700) if needed; mark it as ozw's when new or empty."""
    created = False
    try:
        os.makedirs(root, mode=0o700)
        created = True
    except FileExistsError:
        if not os.path.isdir(root):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", root) from None
    if created:
        os.chmod(root, 0o700)  # makedirs' mode goes through the umask
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "not writable", root)
    with os.scandir(root) as entries:
        empty = next(entries, None) is None
    if created or empty:
        fd = os.open(os.path.join(root, ROOT_MARKER), os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)


def _lock_directory(path: str) -> int | None:
    """An exclusive ``flock`` on the directory itself; None when someone else holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create_file(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.close(fd)


def _populate(private_dir: str, harness: str | None) -> None:
    _create_file(os.path.join(private_dir, GITCONFIG_NAME))
    _create_file(os.path.join(private_dir, ENV_FILE_NAME))
    home = harness_home(harness)
    if home is not None:
        # Codex refuses a CODEX_HOME that does not exist.
        os.mkdir(os.path.join(private_dir, home[1]), 0o700)


def remove_tree(path: str) -> None:
    """Remove a workspace: never follows symlinks, copes with read-only directories."""
    if os.path.islink(path):
        os.unlink(path)
        return

    def retry_writable(func: Callable[..., object], failed: str, exc_info: ExcInfo) -> None:
        # Tools (Go's module cache, for one) leave read-only directories behind: make
        # the parent writable and retry once; anything else is a real failure.
        exc = exc_info[1]
        if not isinstance(exc, PermissionError) or func not in (os.rmdir, os.unlink):
            raise exc
        os.chmod(os.path.dirname(failed), stat.S_IRWXU)
        func(failed)

    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path, onerror=retry_writable)


def create_task_workspace(
    root: str, task_id: str, harness: str | None, *, replace_leftover: bool
) -> Workspace:
    """Create ``<root>/<task_id>`` (0700), locked, with its private files.

    Raises WorkspaceError. Nothing is ever created outside the root: the id holds no
    separator, the result must resolve to a direct child of the resolved root, and
    ``os.mkdir`` never follows a symlink that already sits at the name.
    """
    problem = task_id_problem(task_id)
    if problem is not None:
        raise WorkspaceError(problem)
    try:
        prepare_root(root)
    except OSError as exc:
        raise WorkspaceError(f"cannot create workspace root {root}: {exc.strerror or exc}") from exc
    real_root = os.path.realpath(root)
    path = os.path.join(real_root, task_id)
    if not is_direct_child(path, real_root):
        raise WorkspaceError(f"workspace for task id {task_id!r} would leave {real_root}")
    try:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            _replace_leftover(path, real_root, replace_leftover=replace_leftover)
            os.mkdir(path, 0o700)
        lock_fd = _lock_directory(path)
        if lock_fd is not None:
            os.fchmod(lock_fd, 0o700)  # mkdir's mode goes through the umask
    except OSError as exc:
        raise WorkspaceError(f"cannot create workspace {path}: {exc.strerror or exc}") from exc
    if lock_fd is None:
        raise WorkspaceError(f"workspace {path} is in use by another worker")
    workspace = Workspace(task_id, path, path, owned=True, lock_fd=lock_fd)
    try:
        if os.path.realpath(path) != path:
            raise WorkspaceError(f"workspace {path} was replaced while being created")
        _populate(path, harness)
    except BaseException as exc:
        release_workspace(workspace, remove=True)
        if isinstance(exc, OSError):
            raise WorkspaceError(f"cannot prepare workspace {path}: {exc.strerror or exc}") from exc
        raise
    return workspace


def _replace_leftover(path: str, root: str, *, replace_leftover: bool) -> None:
    """Remove the leftover workspace at ``path``, or raise WorkspaceError.

    Only in a root carrying :data:`ROOT_MARKER` (the rule of :func:`sweep_root`): in any
    other root the directory may be the operator's own, named like a task by chance.
    """
    if os.path.islink(path) or not os.path.isdir(path):
        raise WorkspaceError(f"{path} already exists and is not a workspace directory")
    if not os.path.isfile(os.path.join(root, ROOT_MARKER)):
        raise WorkspaceError(f"{path} exists and is not an ozw workspace")
    if not replace_leftover:
        raise WorkspaceError(f"workspace {path} already exists (kept by an earlier run)")
    lock_fd = _lock_directory(path)
    if lock_fd is None:
        raise WorkspaceError(f"workspace {path} is in use by another worker")
    try:
        logger.warning("replacing leftover workspace %s", path)
        remove_tree(path)
    finally:
        os.close(lock_fd)


def create_private_workspace(target_dir: str, task_id: str, harness: str | None) -> Workspace:
    """``target_dir`` mode: run in the shared directory, private files in a temp dir."""
    problem = task_id_problem(task_id)
    if problem is not None:
        raise WorkspaceError(problem)
    if not os.path.isdir(target_dir):
        raise WorkspaceError(f"target_dir {target_dir} is not an existing directory")
    try:
        private_dir = tempfile.mkdtemp(prefix=f"ozw-{private_dir_label(task_id)}-")
    except OSError as exc:
        raise WorkspaceError(f"cannot create a private directory: {exc.strerror or exc}") from exc
    workspace = Workspace(task_id, os.path.abspath(target_dir), private_dir, owned=False)
    try:
        _populate(private_dir, harness)
    except OSError as exc:
        release_workspace(workspace, remove=True)
        raise WorkspaceError(f"cannot prepare {private_dir}: {exc.strerror or exc}") from exc
    return workspace


def release_workspace(workspace: Workspace, *, remove: bool) -> None:
    """Remove what the task left (its workspace only when ``remove``) and drop the lock.

    The private directory of ``target_dir`` mode always goes. Raises OSError.
    """
    try:
        if workspace.owned:
            if remove:
                remove_tree(workspace.path)
        else:
            remove_tree(workspace.private_dir)
    finally:
        if workspace.lock_fd is not None:
            os.close(workspace.lock_fd)
            workspace.lock_fd = None


def sweep_root(root: str) -> list[str]:
    """Remove every unlocked directory under an ozw-owned root; returns what went.

    Only a root carrying :data:`ROOT_MARKER` is swept; symlinks and files are left alone.
    """
    if not os.path.isfile(os.path.join(root, ROOT_MARKER)):
        return []
    removed = []
    with os.scandir(root) as entries:
        candidates = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    for path in candidates:
        try:
            lock_fd = _lock_directory(path)
        except OSError:
            continue  # vanished or not ours to open
        if lock_fd is None:
            continue  # a live task of some worker
        try:
            remove_tree(path)
            removed.append(path)
        except OSError as exc:
            logger.warning("cannot remove leftover workspace %s: %s", path, exc)
        finally:
            os.close(lock_fd)
    return removed


def read_env_file(path: str) -> dict[str, str]:
    """The dotenv values ``setup_command`` wrote (no interpolation). Raises OSError/ValueError."""
    with open(path, encoding="utf-8") as stream:
        return dotenv_mapping(dotenv_values(stream=stream, interpolate=False))


# ------------------------------------------------------------------------ backend


class DirectBackend(ProcessBackend):
    """Runs the ``oz`` CLI on the host (PROTOCOL.md 5, "direct").

    Args:
        config: the ``[backend.direct]`` table.
        cleanup: remove workspaces after each task and at shutdown (off for debugging).
        environ: the worker's environment (default ``os.environ``), read at construction.

    ``teardown_failures`` counts tasks whose teardown (script or removal) failed.
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
        self.teardown_timeout = config.teardown_timeout + 2 * config.kill_grace + TEARDOWN_MARGIN
        self.teardown_failures = 0
        self._oz: str | None = None
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

    async def aclose(self) -> None:
        """Remove lingering workspaces (see the module docstring) unless cleanup is off."""
        with anyio.CancelScope(shield=True):
            for workspace in list(self._workspaces.values()):
                await self.release(workspace)
            if self.cleanup and not self.config.target_dir:
                root = self.config.workspace_root
                with contextlib.suppress(OSError):
                    for path in await anyio.to_thread.run_sync(sweep_root, root):
                        logger.info("removed leftover workspace %s", path)

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
                    create_private_workspace, self.config.target_dir, params.task_id, params.harness
                )
            else:
                workspace = await anyio.to_thread.run_sync(
                    lambda: create_task_workspace(
                        self.config.workspace_root,
                        params.task_id,
                        params.harness,
                        replace_leftover=self.cleanup,
                    )
                )
        except WorkspaceError as exc:
            raise TaskFailure(FailureReason.WORKSPACE_SETUP, str(exc)) from exc
        self._workspaces[params.task_id] = workspace
        return workspace

    async def release(self, workspace: Workspace) -> bool:
        """Remove a task's files (workspace per ``cleanup``); False when that failed."""
        self._workspaces.pop(workspace.task_id, None)
        try:
            await anyio.to_thread.run_sync(
                lambda: release_workspace(workspace, remove=self.cleanup)
            )
        except OSError as exc:
            logger.warning("cannot remove workspace %s: %s", workspace.path, exc)
            return False
        return True


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
        return script_environment(
            worker=self.backend.environ, task=self.params.env, configured=self._configured(), oz=oz
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

    async def _run_setup_command(self, command: str, workspace: Workspace) -> None:
        env = self._script_env(workspace, setup=True)
        require_valid_environment(env, FailureReason.SETUP_COMMAND, "the setup command")
        result = await run_script(
            self.backend.runner,
            command,
            what="setup command",
            label="setup",
            log=self.log,
            env=env,
            timeout=self._config.setup_timeout,
            cwd=workspace.path,
        )
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
        """Run ``teardown_command`` (bounded), then remove the task's files. Never raises
        for a failure of either: it is logged and counted in ``teardown_failures``."""
        if self._torn_down or self.workspace is None:
            return  # nothing was created, or already done
        self._torn_down = True
        workspace = self.workspace
        script_ok = False
        try:
            script_ok = await self._run_teardown_command(workspace)
        finally:
            with anyio.CancelScope(shield=True):
                removed = await self.backend.release(workspace)
            if not (script_ok and removed):
                self.backend.teardown_failures += 1

    async def _run_teardown_command(self, workspace: Workspace) -> bool:
        command = self._config.teardown_command
        if not command:
            return True
        env = self._script_env(workspace, setup=False)
        try:
            require_valid_environment(env, FailureReason.TEARDOWN_COMMAND, "the teardown command")
        except TaskFailure as exc:
            self.log.warning("%s", exc.cause)
            return False
        result = await run_script(
            self.backend.runner,
            command,
            what="teardown command",
            label="teardown",
            log=self.log,
            env=env,
            timeout=self._config.teardown_timeout,
            cwd=workspace.path,
        )
        if not result.ok:
            self.log.warning("%s", result.describe())
            return False
        return True
