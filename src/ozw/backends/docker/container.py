"""The pure rules of a task container: no engine, no I/O.

Resources, mounts and environment of a task container, the exact ``docker create``
arguments, and what its end state means.

Secrets: environment *values* never appear on a command line. Every value an
env-file can carry (one line, under 64 KiB) goes through an ``--env-file`` written
0600 into a private temporary directory and removed as soon as ``docker create``
returns. Only the rest (multi-line values such as PEM keys) reaches the CLI through
its own environment, as ``--env=NAME`` plus the value in the CLI process's
environment; names that would change what the CLI itself does (``DOCKER_HOST``,
``HOME``, ``PATH``, proxies, ``LD_*``, ``SSH_*``, ``GCONV_PATH``, see
:func:`cli_sensitive`) never go that way, so such a variable with a multi-line value
fails the task with ``container_create``.

Choices where the contract is silent:

- Containers are created from the image ID that was inspected and platform-checked,
  not the tag, so a concurrent pull that moves the tag cannot swap the image under a
  task; the reference is kept in the label ``ozw.image``.
- The command is set with ``--entrypoint=/agent/entrypoint.sh`` and the base arguments
  as the container command, so an ``ENTRYPOINT`` of the task image never wraps it.
- Exit 0 completes even if the engine reports an OOM kill of some child process
  (logged as a warning); a non-zero exit with OOMKilled is ``container_oom``.
- ``vcpus``/``memory_gb`` that are absent or not positive set no limit; values the
  engine refuses (more CPUs than the host has, memory below 6 MiB) fail the task with
  ``container_create`` and the engine's message.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs

from ozw.backends.docker.inspect import ContainerState
from ozw.backends.docker.references import is_valid_reference
from ozw.config import EnvEntry
from ozw.failures import FailureReason, TaskFailure, describe_exit
from ozw.protocol import InstanceShape

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


def cpus_value(vcpus: float | None) -> str | None:
    """The ``--cpus`` value, None when unset or <= 0."""
    if vcpus is None or not math.isfinite(vcpus) or vcpus <= 0:
        return None
    return repr(float(vcpus))


def resource_args(shape: InstanceShape | None) -> list[str]:
    """``--cpus``, ``--memory`` and ``--memory-swap`` (pinned to memory: no swap)."""
    if shape is None:
        return []
    args: list[str] = []
    if (cpus := cpus_value(shape.vcpus)) is not None:
        args.append(f"--cpus={cpus}")
    if (memory := memory_bytes(shape.memory_gb)) is not None:
        args += [f"--memory={memory}", f"--memory-swap={memory}"]
    return args


@attrs.frozen
class SidecarMount:
    """A prepared sidecar: its volume and where it goes."""

    volume: str
    mount_path: str
    read_write: bool = False

    def volume_arg(self) -> str:
        mode = "rw" if self.read_write else "ro"
        return f"--volume={self.volume}:{self.mount_path}:{mode}"


def sidecar_problem(image: str, mount_path: str) -> str | None:
    """Why a sidecar cannot be prepared (empty image, bad reference, bad path), or None."""
    if not image.strip():
        return "a sidecar has an empty image"
    if not is_valid_reference(image):
        return f"sidecar image {image!r} is not a valid image reference"
    if not mount_path.strip():
        return f"sidecar {image} has an empty mount path"
    if not mount_path.startswith("/"):
        return f"sidecar {image} mount path {mount_path!r} is not absolute"
    if normalise_mount_path(mount_path) == "/":
        return f"sidecar {image} cannot be mounted at /"
    if ":" in mount_path or "," in mount_path or "\0" in mount_path:
        # ':' would split the --volume spec; keep the path unambiguous for the engine.
        return f"sidecar {image} mount path {mount_path!r} holds ':' ',' or NUL"
    return None


def normalise_mount_path(path: str) -> str:
    """A mount path as the engine sees it (``/a//b/`` and ``/a/b`` are the same)."""
    if not path.startswith("/"):
        return path
    # normpath keeps a leading "//" (POSIX leaves its meaning open); the engine does not.
    return "/" + posixpath.normpath(path).lstrip("/")


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


def container_environment(
    task_env: Mapping[str, str], configured: Sequence[EnvEntry], environ: Mapping[str, str]
) -> dict[str, str]:
    """The container's environment: the task's, then the configured entries.

    A configured entry without value inherits the worker's variable and is skipped
    when the worker has none (passing an empty value would invent one).
    """
    env = dict(task_env)
    for entry in configured:
        value = entry.value if entry.value is not None else environ.get(entry.name)
        if value is None:
            continue
        env.pop(entry.name, None)
        env[entry.name] = value
    return env


_CLI_SENSITIVE_NAMES: Final = frozenset(
    {
        "HOME",
        "PATH",
        "TMPDIR",
        "SHELL",
        "USER",
        "LOGNAME",
        "DISPLAY",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "GODEBUG",
        "GOGC",
        "GOMAXPROCS",
        "GOMEMLIMIT",
        "GOTRACEBACK",
        "XDG_CONFIG_HOME",
        "XDG_RUNTIME_DIR",
        # The C library and the dynamic loader (the CLI may be dynamically linked, and
        # `ssh://` hosts run ssh, which certainly is).
        "GCONV_PATH",
        "GLIBC_TUNABLES",
        "LOCPATH",
        "NLSPATH",
        "HOSTALIASES",
        "RES_OPTIONS",
        "LOCALDOMAIN",
        "TZ",
        "TZDIR",
        "LANG",
        "LANGUAGE",
    }
)
_CLI_SENSITIVE_PREFIXES: Final = (
    "DOCKER_",
    "OTEL_",
    "BUILDX_",
    "BUILDKIT_",
    "LD_",
    "SSH_",
    "MALLOC_",
    "LC_",
)

ENV_FILE_MAX_LINE: Final = 60_000
"""Longest ``NAME=VALUE`` line (UTF-8 bytes) put in an env-file. The CLI reads the file
with Go's ``bufio.Scanner``, which refuses lines of 64 KiB or more."""


def cli_sensitive(name: str) -> bool:
    """Whether setting ``name`` in the docker CLI's environment could change the CLI.

    Such variables can never carry a task value into the CLI's environment
    (``DOCKER_HOST`` would redirect it to another daemon, ``HOME`` would hide its
    credentials, ``LD_PRELOAD`` or ``GCONV_PATH`` would load code into it,
    ``SSH_AUTH_SOCK`` would hand an ``ssh://`` connection another agent). Compared
    case-insensitively: proxies are read in both cases, and an extra name on this
    side only makes a multi-line value fail instead of being passed.
    """
    upper = name.upper()
    return upper in _CLI_SENSITIVE_NAMES or upper.startswith(_CLI_SENSITIVE_PREFIXES)


def env_file_problem(name: str, value: str) -> str | None:
    """Why ``NAME=VALUE`` cannot travel in an env-file, or None when it can.

    The CLI reads an env-file line by line: it strips leading whitespace and a UTF-8
    BOM, skips ``#`` comments, refuses whitespace in a name and lines of 64 KiB or
    more, and drops a trailing CR. Anything those rules would change or refuse is
    refused here instead.
    """
    if any(c.isspace() for c in name) or name.startswith(("#", "\ufeff")):
        return f"invalid environment variable name {name!r}"
    if "\n" in value or "\r" in value:
        return f"environment variable {name} cannot hold a line break"
    try:
        size = len(name.encode()) + 1 + len(value.encode())
    except UnicodeEncodeError:
        return f"environment variable {name} is not valid UTF-8"
    if size > ENV_FILE_MAX_LINE:
        return (
            f"environment variable {name} is too long "
            f"({size} bytes with its name; at most {ENV_FILE_MAX_LINE})"
        )
    return None


def environment_problem(env: Mapping[str, str]) -> str | None:
    """Why ``env`` cannot be passed to a container, or None.

    An ``=`` in a name would turn ``--env=NAME`` into ``NAME=value`` on the command
    line, so such names are refused rather than passed. A CLI-sensitive variable must
    travel in the env-file (see :func:`plan_environment`), so a value the env-file
    cannot carry (a line break, for one) is refused for it.
    """
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            return f"invalid environment variable name {name!r}"
        if "\0" in value:
            return f"environment variable {name} holds a NUL byte"
        if cli_sensitive(name) and (problem := env_file_problem(name, value)) is not None:
            return problem
    return None


@attrs.frozen
class EnvPlan:
    """How the container environment reaches ``docker create`` without touching argv."""

    names: tuple[str, ...]
    """Passed as ``--env=NAME``, values in the CLI's environment (what an env-file
    cannot carry, never a CLI-sensitive name)."""
    cli_values: dict[str, str]
    """What to add to the CLI's environment."""
    file_lines: tuple[str, ...]
    """``NAME=VALUE`` lines of the env-file: every value it can carry."""


def plan_environment(env: Mapping[str, str]) -> EnvPlan:
    """Split the container environment between the env-file and ``--env=NAME``.

    Everything the env-file can carry goes there, so the CLI's own environment gets
    only what it cannot (multi-line values, mostly). Call after
    :func:`environment_problem` found nothing: a CLI-sensitive name the env-file
    cannot carry is then impossible.
    """
    names: list[str] = []
    cli_values: dict[str, str] = {}
    lines: list[str] = []
    for name, value in env.items():
        if env_file_problem(name, value) is None:
            lines.append(f"{name}={value}")
        else:
            assert not cli_sensitive(name), f"{name} must travel in the env-file"
            names.append(name)
            cli_values[name] = value
    return EnvPlan(tuple(names), cli_values, tuple(lines))


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
    env_names: tuple[str, ...]
    sidecars: tuple[SidecarMount, ...]
    volumes: tuple[str, ...]
    shape: InstanceShape | None
    env_file: str | None = None


def task_labels(
    worker_id: str, task_id: str, execution_id: str | None, image_ref: str | None = None
) -> list[str]:
    """The ``--label`` arguments of a task container."""
    labels = [
        f"--label={LABEL_WORKER}={worker_id}",
        f"--label={LABEL_TASK}={task_id}",
    ]
    if execution_id is not None:
        labels.append(f"--label={LABEL_EXECUTION}={execution_id}")
    labels.append(f"--label={LABEL_ROLE}={ROLE_TASK}")
    if image_ref is not None:
        labels.append(f"--label={LABEL_IMAGE}={image_ref}")
    return labels


def create_args(spec: ContainerSpec) -> list[str]:
    """The arguments after ``docker`` that create a task container, exactly.

    Every option is one ``--flag=value`` token, so no value (a task id, a path) can be
    read as another option. Sidecar volumes come first, then configured volumes.
    """
    args = ["create", f"--name={spec.name}"]
    args += task_labels(spec.worker_id, spec.task_id, spec.execution_id, spec.image_ref)
    args.append(f"--workdir={WORKDIR}")
    args += resource_args(spec.shape)
    args += [sidecar.volume_arg() for sidecar in spec.sidecars]
    args += [f"--volume={volume}" for volume in spec.volumes]
    if spec.env_file is not None:
        args.append(f"--env-file={spec.env_file}")
    args += [f"--env={name}" for name in spec.env_names]
    args.append(f"--entrypoint={ENTRYPOINT}")
    args.append(spec.image_id)
    args += spec.base_args
    return args


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
