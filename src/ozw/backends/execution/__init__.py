"""The execution layer under every backend: what a task's child processes inherit, how
they are started and stopped, how operator scripts run, how long a call may take.

- :mod:`~ozw.backends.execution.environment`: the layering order, the validity policy
  and the ``WARP_API_KEY`` rule for every child process.
- :mod:`~ozw.backends.execution.processes`: child processes in their own process
  group, output relayed live, stopped group-wide (SIGTERM, ``kill_grace``, SIGKILL).
- :mod:`~ozw.backends.execution.scripts`: :func:`run_script`, one ``/bin/sh -c``
  script run to a :class:`ScriptResult`.
- :mod:`~ozw.backends.execution.spawn`: children started so the kernel ends them
  when the worker dies (``PR_SET_PDEATHSIG``); :mod:`~ozw.backends.execution.executables`
  checks first that ``execve`` would start the command.
- :mod:`~ozw.backends.execution.ledger` / :mod:`~ozw.backends.execution.leftovers`:
  the on-disk record of live process groups, and stopping a dead worker's at start-up.
- :mod:`~ozw.backends.execution.limits`: :func:`bounded` (a step that fails the task
  past its bound) and :func:`cleanup_bound` (shielded clean-up with a deadline).

Everything here is anyio (no Trio-only call), so backends run under Trio and asyncio.
"""

from ozw.backends.execution.environment import (
    WORKER_ONLY_VARIABLES,
    configured_environment,
    environment_problem,
    inherited_environment,
    invalid_variables,
    layered_environment,
    require_valid_environment,
)
from ozw.backends.execution.ledger import ProcessLedger
from ozw.backends.execution.leftovers import stop_leftovers
from ozw.backends.execution.limits import bounded, cleanup_bound
from ozw.backends.execution.processes import ProcessRunner, group_alive
from ozw.backends.execution.scripts import SHELL, ScriptResult, run_script

__all__ = [
    "SHELL",
    "WORKER_ONLY_VARIABLES",
    "ProcessLedger",
    "ProcessRunner",
    "ScriptResult",
    "bounded",
    "cleanup_bound",
    "configured_environment",
    "environment_problem",
    "group_alive",
    "inherited_environment",
    "invalid_variables",
    "layered_environment",
    "require_valid_environment",
    "run_script",
    "stop_leftovers",
]
