"""The direct backend: the ``oz`` CLI on the host, one workspace per task (docs/protocol.md).

Modules: :mod:`~ozw.backends.direct.backend` (the backend, owner of the workspaces),
:mod:`~ozw.backends.direct.task` (one task's run), :mod:`~ozw.backends.direct.rules` (pure
rules), :mod:`~ozw.backends.direct.workspace` (workspaces on disk).

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
and the like can run code the agent chose), the task environment (setup only: like
the Go worker, teardown gets no task variable, for the same reason), the configured
``environment`` (teardown only its names listed without value; listing
``WARP_API_KEY`` there is the deliberate opt-in; it then reaches the agent too, like
every configured entry), then ``OZ_WORKSPACE_ROOT`` (the
task's workspace), ``OZ_WORKER_BACKEND=direct``, ``OZ_RUN_ID``, ``GIT_CONFIG_GLOBAL``
and, for setup only, ``OZ_ENVIRONMENT_FILE``.

A variable no process can receive (see :mod:`ozw.backends.execution.environment`)
fails the task: ``setup_command`` for the setup script's environment,
``agent_invocation`` for the agent's.

Choices where the contract is silent:

- Task ids are validated in ``target_dir`` mode too (same rule everywhere).
- With ``target_dir``, everything per task (git config, environment file, harness
  config directories) lives in a private ``mkdtemp`` directory outside ``target_dir``
  (in ``$TMPDIR/ozw-direct-<uid>/`` once :meth:`DirectBackend.recover` ran, locked
  while its task lives, so a start-up after a crash sweeps the ones left),
  removed at teardown whatever ``cleanup`` says: concurrent tasks must not share them
  and the operator's directory must not collect our files. Its name carries the task
  id when short, else a hash of it, so any id a per-task workspace accepts works here.
- A workspace that already exists is the run's, from an earlier execution (a follow-up
  of the same ``task_id``; kept by cleanup off, by a crash, or by a Go worker that used
  the same root): it is reused as it is, as the Go worker does (docs/protocol.md), with a
  fresh environment file. ozw deletes it afterwards (cleanup on) only when it created
  it or the root carries :data:`ROOT_MARKER`: in another root the directory may be the
  operator's. A workspace in use by another worker process (see locking below) is
  refused (``workspace_setup``).
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

from ozw.backends.direct.backend import DirectBackend
from ozw.backends.direct.rules import ENV_FILE_NAME
from ozw.backends.direct.task import DirectTaskRun
from ozw.backends.direct.workspace import ROOT_MARKER

__all__ = ["ENV_FILE_NAME", "ROOT_MARKER", "DirectBackend", "DirectTaskRun"]
