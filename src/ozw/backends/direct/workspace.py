"""Direct-backend workspaces on disk: the root marker, locks, create / reuse / release /
sweep. Synchronous file-system code; the backend runs it in a worker thread."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from types import TracebackType
from typing import Final, TypeAlias

import attrs
from dotenv import dotenv_values

from ozw.backends.direct.rules import (
    ENV_FILE_NAME,
    GITCONFIG_NAME,
    dotenv_mapping,
    harness_home,
    is_direct_child,
    private_dir_label,
    task_id_problem,
)

logger = logging.getLogger(__name__)

ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType]

PRIVATE_PREFIX: Final = "ozw-"
"""The name prefix of a ``target_dir`` task's private directory."""
ROOT_MARKER: Final = ".ozw-workspaces"
"""Present in a workspace root that ozw owns; only such a root is swept."""


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
    removable: bool = True
    """False for an existing directory reused in a root ozw does not own (a Go worker's,
    or the operator's): ozw never deletes it, whatever ``cleanup`` says."""

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


def _open_private(path: str, flags: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | flags, 0o600)
    os.close(fd)


def _populate(private_dir: str, harness: str | None, *, reused: bool = False) -> None:
    """Create the private files; in a reused workspace keep the git config (the run's
    earlier executions may have written to it) but start a fresh environment file.
    Never follows a symlink the agent may have left at those names."""
    _open_private(os.path.join(private_dir, GITCONFIG_NAME), 0 if reused else os.O_EXCL)
    _open_private(os.path.join(private_dir, ENV_FILE_NAME), os.O_TRUNC if reused else os.O_EXCL)
    home = harness_home(harness)
    if home is not None:
        # Codex refuses a CODEX_HOME that does not exist.
        home_dir = os.path.join(private_dir, home[1])
        try:
            os.mkdir(home_dir, 0o700)
        except FileExistsError:
            if not reused or os.path.islink(home_dir) or not os.path.isdir(home_dir):
                raise


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


def create_task_workspace(root: str, task_id: str, harness: str | None) -> Workspace:
    """Create ``<root>/<task_id>`` (0700), or reuse it when it exists; locked, with its
    private files.

    A directory already there is the run's workspace from an earlier execution (kept
    by cleanup off, by a crash, or by a Go worker that used the same root): it is
    reused as it is, like the Go worker does. It is only ever deleted afterwards when
    ozw created it or the root carries :data:`ROOT_MARKER`.

    Raises WorkspaceError. Nothing is ever created outside the root: the id holds no
    separator, the result must resolve to a direct child of the resolved root, and
    neither ``os.mkdir`` nor the lock follows a symlink that sits at the name.
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
    reused = False
    try:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if os.path.islink(path) or not os.path.isdir(path):
                raise WorkspaceError(
                    f"{path} already exists and is not a workspace directory"
                ) from None
            reused = True
        lock_fd = _lock_directory(path)
        if lock_fd is not None and not reused:
            os.fchmod(lock_fd, 0o700)  # mkdir's mode goes through the umask
    except OSError as exc:
        raise WorkspaceError(f"cannot create workspace {path}: {exc.strerror or exc}") from exc
    if lock_fd is None:
        raise WorkspaceError(f"workspace {path} is in use by another worker")
    if reused:
        logger.info("reusing the existing workspace %s", path)
    removable = not reused or os.path.isfile(os.path.join(real_root, ROOT_MARKER))
    workspace = Workspace(task_id, path, path, owned=True, lock_fd=lock_fd, removable=removable)
    try:
        if os.path.realpath(path) != path:
            raise WorkspaceError(f"workspace {path} was replaced while being created")
        _populate(path, harness, reused=reused)
    except BaseException as exc:
        release_workspace(workspace, remove=True)
        if isinstance(exc, OSError):
            raise WorkspaceError(f"cannot prepare workspace {path}: {exc.strerror or exc}") from exc
        raise
    return workspace


def create_private_workspace(
    target_dir: str, task_id: str, harness: str | None, parent: str | None = None
) -> Workspace:
    """``target_dir`` mode: run in the shared directory, private files in a new
    directory ``ozw-<task>-...`` of ``parent`` (default: the temporary directory), locked
    while the task lives so that :func:`sweep_unlocked` finds it after a crash."""
    problem = task_id_problem(task_id)
    if problem is not None:
        raise WorkspaceError(problem)
    if not os.path.isdir(target_dir):
        raise WorkspaceError(f"target_dir {target_dir} is not an existing directory")
    try:
        private_dir = tempfile.mkdtemp(
            prefix=f"{PRIVATE_PREFIX}{private_dir_label(task_id)}-", dir=parent
        )
        lock_fd = _lock_directory(private_dir)
    except OSError as exc:
        raise WorkspaceError(f"cannot create a private directory: {exc.strerror or exc}") from exc
    workspace = Workspace(
        task_id, os.path.abspath(target_dir), private_dir, owned=False, lock_fd=lock_fd
    )
    try:
        _populate(private_dir, harness)
    except OSError as exc:
        release_workspace(workspace, remove=True)
        raise WorkspaceError(f"cannot prepare {private_dir}: {exc.strerror or exc}") from exc
    return workspace


def release_workspace(workspace: Workspace, *, remove: bool) -> None:
    """Remove what the task left (its workspace only when ``remove`` and it is
    :attr:`~Workspace.removable`) and drop the lock.

    The private directory of ``target_dir`` mode always goes. Raises OSError.
    """
    try:
        if workspace.owned:
            if remove and workspace.removable:
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
    return sweep_unlocked(root)


def sweep_unlocked(directory: str, prefix: str = "") -> list[str]:
    """Remove every directory in ``directory`` (named ``prefix...``) that no live worker
    holds locked; returns what went. Symlinks and files are left alone."""
    removed = []
    with os.scandir(directory) as entries:
        candidates = [
            e.path for e in entries if e.is_dir(follow_symlinks=False) and e.name.startswith(prefix)
        ]
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
