"""Environment rules shared by every backend: one layering order, one validity policy,
one rule for what a child process inherits from the worker.

**Layering** (docs/protocol.md; later layers win for the same name), see
:func:`layered_environment`:

1. ``inherited``: what the child takes from the worker's own environment
   (:func:`inherited_environment`, or a backend's narrower choice such as the direct
   agent's ``HOME``/``TMPDIR``/``PATH``);
2. ``task``: the task environment (``TaskParams.env``);
3. ``configured``: the backend's configured ``environment`` entries
   (:func:`configured_environment`: an entry without value inherits the worker's
   variable and is skipped when the worker has none);
4. ``overrides``: what the task's own set-up produced (the direct backend's
   environment file);
5. ``forced``: what the backend sets and nothing overrides (``OZ_*``,
   ``GIT_CONFIG_GLOBAL``, ...).

**Validity.** A variable no process can receive (an empty name, ``=`` or NUL in the
name, NUL in the value: ``execve`` would refuse the whole environment) fails the task
with the reason of the step that would have carried it, naming the variable (never its
value). It is never dropped silently: an agent missing a variable it was given would
fail later, further from the cause.

**Inheritance.** No child process of the worker (agents, scripts, the docker CLI and
whatever it runs, such as credential helpers) receives ``WARP_API_KEY``, the worker's
own Oz credential, unless the operator lists it in a configured ``environment``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ozw.config import resolve_environment as configured_environment
from ozw.tasks.failures import FailureReason, TaskFailure

__all__ = [
    "WORKER_ONLY_VARIABLES",
    "configured_environment",
    "environment_problem",
    "inherited_environment",
    "invalid_variables",
    "is_invalid_name",
    "layered_environment",
    "require_valid_environment",
]

WORKER_ONLY_VARIABLES: Final = frozenset({"WARP_API_KEY"})
"""Worker variables no child inherits (a configured entry passes one on deliberately)."""


def inherited_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What a child process of the worker inherits: the worker's environment without
    :data:`WORKER_ONLY_VARIABLES`. The docker backend runs its CLI with this; a
    configured entry naming one of them (the ``configured`` layer) is the only way back."""
    return {name: value for name, value in environ.items() if name not in WORKER_ONLY_VARIABLES}


def layered_environment(
    *,
    inherited: Mapping[str, str] | None = None,
    task: Mapping[str, str] | None = None,
    configured: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    forced: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Merge the five layers of the module docstring, in that order (later wins)."""
    merged: dict[str, str] = {}
    for layer in (inherited, task, configured, overrides, forced):
        if layer is not None:
            merged.update(layer)
    return merged


def is_invalid_name(name: str) -> bool:
    """Whether ``name`` cannot name an environment variable of a process."""
    return not name or "=" in name or "\0" in name


def invalid_variables(env: Mapping[str, str]) -> list[str]:
    """Names no process can receive (``execve`` would refuse the whole environment)."""
    return [name for name, value in env.items() if is_invalid_name(name) or "\0" in value]


def environment_problem(env: Mapping[str, str]) -> str | None:
    """Why ``env`` cannot be given to a process, naming the first bad variable; or None."""
    for name, value in env.items():
        if is_invalid_name(name):
            return f"invalid environment variable name {name!r}"
        if "\0" in value:
            return f"environment variable {name} holds a NUL byte"
    return None


def require_valid_environment(env: Mapping[str, str], reason: FailureReason, what: str) -> None:
    """Raise TaskFailure(``reason``) when ``env`` holds a variable no process can receive.

    ``what`` names the process ("the setup command"), for the failure's message.
    """
    problem = environment_problem(env)
    if problem is not None:
        raise TaskFailure(reason, f"cannot start {what}: {problem}")
