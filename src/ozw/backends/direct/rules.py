"""The direct backend's pure rules: task ids, private directory names, environment layers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Final

from ozw.backends.execution.environment import inherited_environment, layered_environment

HOST_VARIABLES: Final = ("HOME", "TMPDIR", "PATH")
"""The only worker variables the agent inherits."""
GITCONFIG_NAME: Final = ".gitconfig"
ENV_FILE_NAME: Final = ".oz.env"
HARNESS_HOMES: Final[Mapping[str, tuple[str, str]]] = {
    "claude": ("CLAUDE_CONFIG_DIR", ".claude"),
    "codex": ("CODEX_HOME", ".codex"),
}
"""Harness → (variable, directory name inside the task's private directory)."""
PRIVATE_DIR_ID_MAX: Final = 64
"""Longer task ids are hashed in the name of a ``target_dir`` task's private directory."""


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
