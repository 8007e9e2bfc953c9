"""The command backend: hand each task to the operator's own scheduler (docs/protocol.md).

Modules: :mod:`~ozw.backends.command.backend` (:class:`CommandBackend`: the check, the
cancel command), :mod:`~ozw.backends.command.task` (one task's dispatch),
:mod:`~ozw.backends.command.rules` (the payload and the environments, pure).

For every task ozw runs ``dispatch_command`` with ``/bin/sh -c`` and writes one JSON
document, the *dispatch payload* (:func:`dispatch_payload`), to its stdin::

    {"version": 1, "run_id", "execution_id", "server_root_url", "worker_id",
     "docker_image", "base_args", "env", "sidecars", "task"}

shaped like the Go worker's (``execution_id`` a string, ``""`` when the assignment
had none; ``task`` always with ``id``, ``title``, ``task_definition.prompt``,
``created_at``, ``updated_at``, see :func:`payload_task`), so a dispatch script
written for the Go worker runs unchanged.

Exit status 0 means the task was handed off: the remote runtime now owns it and
reports for itself, so the worker sends no terminal message and frees the slot at
once. A non-zero exit fails the task with ``dispatch_command`` (the exit code and the
last stderr line in the message, the last stderr lines in the log); a command still
running after ``dispatch_timeout`` has its whole process group killed and fails the
task with ``dispatch_timeout``. A command that cannot be found is exit status 127 of
the shell, so it is classified by its exit code like any other failure.

A server cancellation of a handed-off task (or of one still dispatching) runs the
optional ``cancel_command``, best effort: bounded by ``dispatch_timeout``, its failure
logged as a warning, never the task's result. Hand-offs survive the worker: shutdown
runs no cancel command for them.

A dispatch command that did not finish on its own may already have submitted the
work: one that timed out, one whose task scope was cancelled (a server cancellation,
``task_timeout``, the worker's forced stop) and one killed by :meth:`CommandBackend.kill_all`.
Once its group is gone, ``cancel_command`` runs for it in the same best-effort way
(shielded, bounded by ``dispatch_timeout``) before the failure or cancellation is
reported, so the server's re-queued task does not run twice. After a forced stop
(:meth:`CommandBackend.kill_all`, the second Ctrl-C) such a cancel command gets at most
:data:`FORCED_CANCEL_TIMEOUT`: the operator asked to stop now.

Environment of both commands (later layers win; see :func:`command_environment`):

1. the worker's environment, *without* ``WARP_API_KEY``: the worker's own Oz
   credential has no business in an operator script (nor in whatever it starts);
2. the configured ``environment`` (an entry without value inherits the worker's
   variable, and is skipped when the worker has none). Listing ``WARP_API_KEY`` here
   explicitly is the way to pass it on deliberately;
3. forced, never overridable: ``OZ_RUN_ID``, ``OZ_EXECUTION_ID`` (empty when the
   assignment had none), ``OZ_WORKER_BACKEND=command`` and, for the dispatch command
   only, ``OZ_SERVER_ROOT_URL`` and ``OZ_DOCKER_IMAGE`` (:func:`dispatch_variables`).

The task environment (``TaskParams.env``, which holds the task's secrets) travels
only in the payload's ``env``: never in a command's environment or argv. The
configured ``environment`` goes into the commands' process environment, not into
the payload: it configures the operator's scripts, and a script forwards to the
remote runtime whatever it chooses.

Choices where the contract is silent:

- The payload is compact JSON, ASCII-escaped (it survives any locale and a lone
  surrogate), followed by one newline, keys in the order above.
- ``cancel_command`` gets no stdin (the payload carries secrets a cancel does not need).
- When a cancellation arrives while the task is still being dispatched, the task's
  scope is cancelled (the dispatch command's group is stopped) and the cancel command
  runs only once the dispatch command is gone, so a script that had already started
  the remote work finds what it needs to stop it. It runs once: the stopped dispatch
  runs it, and :meth:`CommandBackend.cancel` only waits for that.
"""
