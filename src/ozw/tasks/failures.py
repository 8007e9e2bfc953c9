"""Failure reasons (docs/protocol.md), the classified task failure and exit-code rules."""

from __future__ import annotations

import enum
import signal


class FailureReason(enum.StrEnum):
    """Why a task failed, exactly as the dispatch server spells it."""

    TASK_TIMEOUT = "task_timeout"
    TASK_CANCELLED = "task_cancelled"
    GRACEFUL_SHUTDOWN = "graceful_shutdown"
    IMAGE_PULL = "image_pull"
    SIDECAR_PREP = "sidecar_prep"
    CONTAINER_CREATE = "container_create"
    CONTAINER_START = "container_start"
    CONTAINER_WAIT = "container_wait"
    CONTAINER_EXIT = "container_exit"
    CONTAINER_OOM = "container_oom"
    WORKSPACE_SETUP = "workspace_setup"
    SETUP_COMMAND = "setup_command"
    AGENT_INVOCATION = "agent_invocation"
    TEARDOWN_COMMAND = "teardown_command"
    DISPATCH_COMMAND = "dispatch_command"
    DISPATCH_TIMEOUT = "dispatch_timeout"
    CANCEL_COMMAND = "cancel_command"
    # The Kubernetes backend's (docs/protocol.md).
    JOB_CREATE = "job_create"
    JOB_WATCH = "job_watch"
    JOB_FAILED = "job_failed"
    EVICTED = "evicted"
    POD_WATCH = "pod_watch"
    UNSCHEDULABLE = "unschedulable"
    VOLUME_MOUNT = "volume_mount"
    INIT_CONTAINER = "init_container"
    INVALID_IMAGE = "invalid_image"
    ACTIVE_DEADLINE = "active_deadline"
    CLEANUP = "cleanup"
    UNKNOWN = "unknown"


class TaskFailure(Exception):
    """A task failed for a known reason.

    Backends raise this; the lifecycle turns it into one ``task_failed`` message.
    ``cause`` is for people (no traceback); ``exit_code`` is set only when a
    process exit status was really observed.
    """

    def __init__(self, reason: FailureReason, cause: str, exit_code: int | None = None) -> None:
        super().__init__(cause)
        self.reason = reason
        self.cause = cause
        self.exit_code = exit_code

    @property
    def message(self) -> str:
        return failure_message(self.cause)

    def __repr__(self) -> str:
        return f"TaskFailure({self.reason.value!r}, {self.cause!r}, exit_code={self.exit_code!r})"


class StartupError(Exception):
    """The worker cannot start; the message is one line for the operator."""


class BackendUnavailable(StartupError):
    """A backend's start-up check failed; the message is one line for the operator."""


TASK_CANCELLED_MESSAGE = (
    "The task was interrupted due to an infrastructure issue (context canceled). "
    "This is typically transient \N{EM DASH} please try again."
)
"""The message of a ``task_cancelled`` failure, as the Go worker words it."""


def failure_message(cause: str) -> str:
    """The human message of a failed task, as upstream words it."""
    return f"Failed to execute task: {cause}"


def normalise_exit_code(returncode: int) -> int:
    """Map a process return code to a shell-style exit code (signal N → 128+N)."""
    if returncode < 0:
        return 128 - returncode
    return returncode


def describe_exit(exit_code: int) -> str:
    """Describe an exit code for people: ``exit code 3``, ``killed by SIGKILL (exit code 137)``."""
    if exit_code > 128:
        try:
            name = signal.Signals(exit_code - 128).name
        except ValueError:
            return f"exit code {exit_code}"
        return f"killed by {name} (exit code {exit_code})"
    return f"exit code {exit_code}"
