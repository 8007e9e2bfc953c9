"""The pure rules of a task container: no engine, no I/O.

Resources, mounts and environment of a task container, the exact ``docker create``
arguments, and what its end state means.

Secrets: environment *values* never appear on a command line, in a file or in any
process environment on the host: ``docker create`` is the engine API's
``POST /containers/create`` with a JSON body (:func:`create_request`), sent through the
docker CLI's own connection to the daemon (``docker system dial-stdio``, see
:mod:`~ozw.backends.docker.engine`), so every value reaches the container exactly
(line breaks, ``=``, any name: ``HOME``, ``SSH_*``, ``LANG``, ``DOCKER_HOST``).
Refused, naming the variable, is only what no process environment can hold: a NUL,
an ``=`` in a name, text that is not UTF-8, and an entry over the kernel's
:data:`MAX_ENV_ENTRY` bytes.

Choices where the contract is silent:

- Containers are created from the image ID that was inspected and platform-checked,
  not the tag, so a concurrent pull that moves the tag cannot swap the image under a
  task; the reference is kept in the label ``ozw.image``.
- Like the Go worker, the container's command (``Cmd``) is ``/agent/entrypoint.sh``
  and the base arguments; the image's own ``ENTRYPOINT``, if any, is kept and wraps it
  (images use it for set-up wrappers ending in ``exec "$@"``).
- Configured ``volumes`` are passed as binds verbatim, as the Go worker does.
- Exit 0 completes even if the engine reports an OOM kill of some child process
  (logged as a warning); a non-zero exit with OOMKilled is ``container_oom``.
- ``vcpus``/``memory_gb`` that are absent or not positive set no limit; values the
  engine refuses (more CPUs than the host has, memory below 6 MiB) fail the task with
  ``container_create`` and the engine's message.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from ozw.backends.docker.inspect import ContainerState
from ozw.backends.docker.references import is_valid_reference
from ozw.backends.execution.environment import environment_problem as process_environment_problem
from ozw.tasks.failures import FailureReason, TaskFailure, describe_exit
from ozw.tasks.params import Shape
from ozw.tasks.ranges import mount_path_problem, normalise_mount_path

LABEL_WORKER: Final = "ozw.worker_id"
LABEL_TASK: Final = "ozw.task_id"
LABEL_EXECUTION: Final = "ozw.execution_id"
LABEL_ROLE: Final = "ozw.role"
LABEL_IMAGE: Final = "ozw.image"
ROLE_TASK: Final = "task"
ROLE_FILL: Final = "sidecar-fill"
ROLE_RW: Final = "sidecar-rw"
"""Role label of a ``read_write`` sidecar's private volume."""

WORKDIR: Final = "/workspace"
ENTRYPOINT: Final = "/agent/entrypoint.sh"

# --- resources, mounts, environment ----------------------------------------------------


def memory_bytes(memory_gb: float | None) -> int | None:
    """The memory limit in bytes (GiB-based, as Docker's ``g``), None when unset or <= 0."""
    if memory_gb is None or not math.isfinite(memory_gb) or memory_gb <= 0:
        return None
    return int(memory_gb * 1024**3)


def nano_cpus(vcpus: float | None) -> int | None:
    """The CPU limit in billionths of a CPU (``--cpus``), None when unset or <= 0."""
    if vcpus is None or not math.isfinite(vcpus) or vcpus <= 0:
        return None
    return round(vcpus * 1e9)


def resources(shape: Shape | None) -> dict[str, int]:
    """``NanoCpus``, ``Memory`` and ``MemorySwap`` (pinned to memory: no swap)."""
    limits: dict[str, int] = {}
    if shape is None:
        return limits
    if (cpus := nano_cpus(shape.vcpus)) is not None:
        limits["NanoCpus"] = cpus
    if (memory := memory_bytes(shape.memory_gb)) is not None:
        limits["Memory"] = limits["MemorySwap"] = memory
    return limits


@attrs.frozen
class SidecarMount:
    """A prepared sidecar: its volume and where it goes."""

    volume: str
    mount_path: str
    read_write: bool = False

    def bind(self) -> str:
        """``volume:path:ro|rw``, as ``docker run -v`` and the engine's binds read it."""
        mode = "rw" if self.read_write else "ro"
        return f"{self.volume}:{self.mount_path}:{mode}"

    def volume_arg(self) -> str:
        return f"--volume={self.bind()}"


def sidecar_problem(image: str, mount_path: str) -> str | None:
    """Why a sidecar cannot be prepared (empty image, bad reference, bad path), or None."""
    if not image.strip():
        return "a sidecar has an empty image"
    if not is_valid_reference(image):
        return f"sidecar image {image!r} is not a valid image reference"
    if (problem := mount_path_problem(mount_path)) is not None:
        return f"sidecar {image} mount path {mount_path!r} {problem}"
    return None


def duplicate_mount_paths(mount_paths: Iterable[str]) -> list[str]:
    """Mount paths used more than once (after normalisation), in first-seen order."""
    seen: set[str] = set()
    duplicates: list[str] = []
    for path in mount_paths:
        key = normalise_mount_path(path)
        if key in seen and key not in duplicates:
            duplicates.append(key)
        seen.add(key)
    return duplicates


MAX_ENV_ENTRY: Final = 131_071
"""Longest ``NAME=VALUE`` (UTF-8 bytes) a Linux process environment holds: the kernel
refuses any single string of 32 pages (``MAX_ARG_STRLEN``) or more at ``execve``."""


def environment_problem(env: Mapping[str, str]) -> str | None:
    """Why ``env`` cannot reach a container's processes exactly, or None.

    Any name and value goes, line breaks and ``=`` in values included, except what no
    process environment can hold: the execution layer's rule (no NUL, no ``=`` in a
    name), then text and size.
    """
    if (problem := process_environment_problem(env)) is not None:
        return problem
    for name, value in env.items():
        try:
            size = len(name.encode()) + 1 + len(value.encode())
        except UnicodeEncodeError:
            return f"environment variable {name} is not valid UTF-8"
        if size > MAX_ENV_ENTRY:
            return (
                f"environment variable {name} is too large ({size} bytes with its name; "
                f"a process environment entry holds at most {MAX_ENV_ENTRY})"
            )
    return None


@attrs.frozen
class ContainerSpec:
    """Everything ``docker create`` is told about a task container."""

    name: str
    image_id: str
    image_ref: str
    worker_id: str
    task_id: str
    execution_id: str | None
    base_args: tuple[str, ...]
    env: Mapping[str, str] = attrs.field(repr=False)
    """The container's environment (secrets: never in a repr or a log)."""
    sidecars: tuple[SidecarMount, ...]
    volumes: tuple[str, ...]
    shape: Shape | None


def task_labels(
    worker_id: str, task_id: str, execution_id: str | None, image_ref: str | None = None
) -> dict[str, str]:
    """The labels of a task container."""
    labels = {LABEL_WORKER: worker_id, LABEL_TASK: task_id}
    if execution_id is not None:
        labels[LABEL_EXECUTION] = execution_id
    labels[LABEL_ROLE] = ROLE_TASK
    if image_ref is not None:
        labels[LABEL_IMAGE] = image_ref
    return labels


def create_request(spec: ContainerSpec) -> tuple[str, dict[str, object]]:
    """The engine API request creating a task container: its target and JSON body.

    ``POST <target>`` with the body is what ``docker create`` sends. Sidecar volumes
    come first, then configured volumes (as the Go worker binds them).
    """
    config: dict[str, object] = {
        "Image": spec.image_id,
        "Cmd": [ENTRYPOINT, *spec.base_args],
        "Env": [f"{name}={value}" for name, value in spec.env.items()],
        "WorkingDir": WORKDIR,
        "Labels": task_labels(spec.worker_id, spec.task_id, spec.execution_id, spec.image_ref),
        # What `docker create` without -a sets: `docker start -a` then relays both.
        "AttachStdout": True,
        "AttachStderr": True,
    }
    config["HostConfig"] = {
        "Binds": [sidecar.bind() for sidecar in spec.sidecars] + list(spec.volumes),
        **resources(spec.shape),
    }
    return f"/containers/create?{urllib.parse.urlencode({'name': spec.name})}", config


def docker_error(stderr: bytes | str) -> str:
    """The docker CLI's error as one line: its last non-empty stderr line, trimmed."""
    text = stderr.decode("utf-8", errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    usage = [line for line in lines if not line.startswith(("See '", "Run '", "Usage:"))]
    chosen = usage or lines
    return chosen[-1] if chosen else "no error output"


# --- container state -----------------------------------------------------------------


def classify_exit(state: ContainerState, memory_limit: int | None = None) -> TaskFailure | None:
    """The failure an exited container means, or None when it completed (exit 0)."""
    if not state.started:
        cause = state.error or f"container never started (status {state.status})"
        return TaskFailure(FailureReason.CONTAINER_START, f"could not start the container: {cause}")
    if state.exit_code == 0:
        return None
    if state.oom_killed:
        limit = f" (limit {memory_limit} bytes)" if memory_limit is not None else ""
        return TaskFailure(
            FailureReason.CONTAINER_OOM,
            f"the container ran out of memory{limit} and was killed "
            f"({describe_exit(state.exit_code)})",
            exit_code=state.exit_code,
        )
    return TaskFailure(
        FailureReason.CONTAINER_EXIT,
        f"the agent exited with {describe_exit(state.exit_code)}",
        exit_code=state.exit_code,
    )
