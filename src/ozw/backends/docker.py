"""The docker backend: every task in its own container (PROTOCOL.md 5, "docker").

Everything goes through the ``docker`` CLI, run with the worker's own environment, so
the daemon, contexts, TLS settings and registry credentials are found exactly as the
operator's ``docker`` command finds them (``DOCKER_HOST``, ``DOCKER_CONTEXT``,
``DOCKER_CONFIG``, ``docker login``, credential helpers).

python-on-whales is deliberately not used here: every call is an
``anyio.run_process`` (short, bounded calls) or a process under
:class:`~ozw.processes.ProcessRunner` (``docker start -a``, whose output is relayed
live). That keeps one code path that cancellation always reaches, needs no thread
pool, and lets each call get its own environment, which the secret-passing rule
below depends on.

One task::

    setup    validate the image reference, sidecars and environment (no I/O);
             pull / inspect the image per ``pull_policy``; refuse a foreign platform;
             for each sidecar: pull it and fill (or reuse) its volume
    execute  docker create (labelled, named ozw-<worker>-<task>-<random>)
             docker start -a  (output relayed into the task log, cancellable)
             docker inspect   (exit code, OOMKilled)
    teardown docker rm -f     (unless cleanup is off)

Secrets: environment *values* never appear on a command line. ``docker create`` gets
``--env=NAME`` only, and the CLI reads each value from its own environment, which is
the worker's environment plus the task's values. Names that would change what the CLI
itself does (``DOCKER_HOST``, ``HOME``, ``PATH``, proxies, see :func:`cli_sensitive`)
cannot travel that way; they go through an ``--env-file`` written 0600 into a private
temporary directory and removed as soon as ``docker create`` returns.

Choices where the contract is silent:

- The "digest" of a sidecar volume name is the image ID (the content digest of the
  image's configuration). Every local image has one, even an imported or locally
  built one that has no registry digest, and it changes whenever the filesystem does.
  The "repo name" is the repository as written in the reference (tag and digest
  dropped, registry host kept): ``127.0.0.1:5000/a/agent:1`` → ``127.0.0.1-5000-a-agent``.
- Containers are created from the image ID that was inspected and platform-checked,
  not the tag, so a concurrent pull that moves the tag cannot swap the image under a
  task; the reference is kept in the label ``ozw.image``.
- The command is set with ``--entrypoint=/agent/entrypoint.sh`` and the base arguments
  as the container command, so an ``ENTRYPOINT`` of the task image never wraps it.
- A pull failure or platform mismatch is ``image_pull`` for sidecar images too; an
  invalid sidecar reference, a bad mount path or a failed fill is ``sidecar_prep``.
- A filled volume holds a marker file ``/.ozw-sidecar-filled`` (the image ID) at its
  root, written last; a volume without it is refilled in place (same digest, same
  content) before use. Tasks therefore see ``<mount>/.ozw-sidecar-filled``.
- Sidecar volumes are kept across tasks and restarts (that is the point of them);
  a ``read_write`` sidecar writes into that shared volume, as the protocol's
  volume-per-digest rule implies.
- Exit 0 completes even if the engine reports an OOM kill of some child process
  (logged as a warning); a non-zero exit with OOMKilled is ``container_oom``.
- ``vcpus``/``memory_gb`` that are absent or not positive set no limit; values the
  engine refuses (more CPUs than the host has, memory below 6 MiB) fail the task with
  ``container_create`` and the engine's message.
- With cleanup off, containers are kept (stopped) after the task, after cancellation
  and at start-up; leftovers of a crashed run are then only killed, not removed.
- The start-up reaper removes every container labelled with this worker's id: two
  live workers must not share a worker id.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import math
import os
import posixpath
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar, Final

import anyio
import anyio.abc
import attrs

from ozw.backends.base import Backend, ExecuteResult, TaskRun
from ozw.config import DockerConfig, EnvEntry
from ozw.failures import BackendUnavailable, FailureReason, TaskFailure, describe_exit
from ozw.logs import TaskLog
from ozw.params import TaskParams
from ozw.processes import ProcessRunner
from ozw.protocol import InstanceShape

logger = logging.getLogger("ozw.backends.docker")

LABEL_WORKER: Final = "ozw.worker_id"
LABEL_TASK: Final = "ozw.task_id"
LABEL_EXECUTION: Final = "ozw.execution_id"
LABEL_ROLE: Final = "ozw.role"
LABEL_IMAGE: Final = "ozw.image"
ROLE_TASK: Final = "task"
ROLE_FILL: Final = "sidecar-fill"

SUPPORTED_PLATFORMS: Final = frozenset({"linux/amd64", "linux/arm64"})
WORKDIR: Final = "/workspace"
ENTRYPOINT: Final = "/agent/entrypoint.sh"
FILL_MOUNT: Final = "/ozw-fill"
"""Where a fill container mounts the sidecar volume (a path no image is expected to have)."""
FILL_COMMAND: Final = "ozw-fill"
"""Command of helper containers, which are created but never started (an image without
``CMD`` cannot be created without one)."""
FILLED_MARKER: Final = ".ozw-sidecar-filled"

CHECK_TIMEOUT: Final = 60.0
"""Bound of the start-up check: an unreachable TCP daemon must not hang start-up."""
CLEANUP_TIMEOUT: Final = 60.0
"""Bound of each shielded clean-up call (rm -f, volume rm), beyond any stop grace."""
CLI_KILL_GRACE: Final = 0.5
"""Grace of the ``docker start -a`` CLI on cancellation. It proxies our SIGTERM to the
container and would then wait for it; the container's own grace is ``docker stop``'s."""
MAX_NAME_PART: Final = 48
MAX_VOLUME_REPO: Final = 180

_ZERO_TIME_PREFIX: Final = "0001-01-01"

# --- image references (the grammar of github.com/distribution/reference) -----------

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?", re.ASCII
)
MAX_NAME_LENGTH: Final = 255

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class InvalidReference(ValueError):
    """An image reference that is not valid Docker reference syntax."""


@attrs.frozen
class ImageReference:
    """A parsed image reference: ``name[:tag][@digest]``."""

    name: str
    tag: str | None = None
    digest: str | None = None


def parse_reference(reference: str) -> ImageReference:
    """Parse ``reference`` strictly; raises :class:`InvalidReference`.

    Only references matching the registry grammar pass, so nothing that reaches a
    command line can start with ``-`` or hold whitespace or control characters.
    """
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        raise InvalidReference(f"{reference!r} is not a valid image reference")
    name = match["name"]
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidReference(
            f"{reference!r} is not a valid image reference: "
            f"repository name longer than {MAX_NAME_LENGTH} characters"
        )
    return ImageReference(name, match["tag"], match["digest"])


def is_valid_reference(reference: str) -> bool:
    """Whether ``reference`` is a valid image reference (see :func:`parse_reference`)."""
    try:
        parse_reference(reference)
    except InvalidReference:
        return False
    return True


def sanitise_name_part(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_.-]`` mapped to ``-``."""
    return _NAME_CHARS.sub("-", text)


def digest_hex(digest: str) -> str:
    """The hex part of ``algorithm:hex`` (or the whole string when it has no algorithm)."""
    return digest.rpartition(":")[2]


def volume_name(reference: str, image_id: str) -> str:
    """The sidecar volume of an image: ``<repo name mapped>-<first 12 hex of its digest>``."""
    repository = sanitise_name_part(parse_reference(reference).name)[:MAX_VOLUME_REPO]
    return f"{repository}-{digest_hex(image_id)[:12]}"


def container_name(worker_id: str, task_id: str, suffix: str) -> str:
    """``ozw-<worker>-<task>-<suffix>``: readable in ``docker ps``, unique by ``suffix``.

    The ``ozw-`` prefix makes the name start with a letter whatever the ids hold.
    """
    worker = sanitise_name_part(worker_id)[:MAX_NAME_PART]
    task = sanitise_name_part(task_id)[:MAX_NAME_PART]
    return f"ozw-{worker}-{task}-{suffix}"


_ARCH_ALIASES: Final = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}


def platform_of(os_name: str, architecture: str) -> str:
    """``os/arch`` in Docker's spelling (``x86_64`` → ``amd64``, ``aarch64`` → ``arm64``)."""
    arch = architecture.strip().lower()
    return f"{os_name.strip().lower()}/{_ARCH_ALIASES.get(arch, arch)}"


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
    }
)
_CLI_SENSITIVE_PREFIXES: Final = ("DOCKER_", "OTEL_", "BUILDX_", "BUILDKIT_")


def cli_sensitive(name: str) -> bool:
    """Whether setting ``name`` in the docker CLI's environment would change the CLI.

    Such variables cannot carry a task value into the CLI (``DOCKER_HOST`` would
    redirect it to another daemon, ``HOME`` would hide its credentials). Compared
    case-insensitively: proxies are read in both cases, and an extra name on this
    side only moves to the env-file.
    """
    upper = name.upper()
    return upper in _CLI_SENSITIVE_NAMES or upper.startswith(_CLI_SENSITIVE_PREFIXES)


def environment_problem(env: Mapping[str, str]) -> str | None:
    """Why ``env`` cannot be passed to a container, or None.

    An ``=`` in a name would turn ``--env=NAME`` into ``NAME=value`` on the command
    line, so such names are refused rather than passed.
    """
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            return f"invalid environment variable name {name!r}"
        if "\0" in value:
            return f"environment variable {name} holds a NUL byte"
        if cli_sensitive(name) and ("\n" in value or "\r" in value):
            # These travel in an env-file, which is one NAME=VALUE per line.
            return f"environment variable {name} cannot hold a line break"
        if cli_sensitive(name) and any(c.isspace() for c in name):
            return f"invalid environment variable name {name!r}"
    return None


@attrs.frozen
class EnvPlan:
    """How the container environment reaches ``docker create`` without touching argv."""

    names: tuple[str, ...]
    """Passed as ``--env=NAME``; values in the CLI's environment."""
    cli_values: dict[str, str]
    """What to add to the CLI's environment."""
    file_lines: tuple[str, ...]
    """``NAME=VALUE`` lines of the env-file (CLI-sensitive names)."""


def plan_environment(env: Mapping[str, str]) -> EnvPlan:
    """Split the container environment between ``--env=NAME`` and the env-file."""
    names: list[str] = []
    cli_values: dict[str, str] = {}
    lines: list[str] = []
    for name, value in env.items():
        if cli_sensitive(name):
            lines.append(f"{name}={value}")
        else:
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


@attrs.frozen
class ContainerState:
    """The part of ``docker inspect``'s ``State`` that decides a task's outcome."""

    status: str
    running: bool
    exit_code: int
    oom_killed: bool
    error: str
    started: bool

    @classmethod
    def from_json(cls, state: Mapping[str, object]) -> ContainerState:
        started_at = str(state.get("StartedAt") or "")
        exit_code = state.get("ExitCode")
        return cls(
            status=str(state.get("Status") or ""),
            running=bool(state.get("Running")),
            exit_code=exit_code if isinstance(exit_code, int) else -1,
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
            started=bool(started_at) and not started_at.startswith(_ZERO_TIME_PREFIX),
        )


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


def marker_tar(content: str) -> bytes:
    """A tar stream holding the filled-volume marker (fed to ``docker cp -``)."""
    data = content.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(FILLED_MARKER)
        info.size = len(data)
        info.mode = 0o444
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# --- the backend ---------------------------------------------------------------------


@attrs.frozen
class _Result:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def error(self) -> str:
        return docker_error(self.stderr)


@attrs.frozen
class LocalImage:
    """An image present on the daemon."""

    reference: str
    image_id: str
    platform: str


class DockerBackend(Backend):
    """Runs each task in a container through the docker CLI (see the module docstring).

    Args:
        config: the ``[backend.docker]`` table.
        worker_id: labels every container (``ozw.worker_id``) so leftovers of this
            worker can be found again.
        cleanup: remove containers after their task; off keeps them for debugging.
        environ: the worker's environment (default ``os.environ``): the docker CLI
            runs with it, and configured variables without value inherit from it.
        docker: the docker CLI (a name on ``PATH`` or a path).
    """

    name: ClassVar[str] = "docker"

    def __init__(
        self,
        config: DockerConfig,
        *,
        worker_id: str,
        cleanup: bool = True,
        environ: Mapping[str, str] | None = None,
        docker: str = "docker",
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.cleanup = cleanup
        self.environ: dict[str, str] = dict(os.environ if environ is None else environ)
        self.docker = docker
        self.platform: str | None = None
        self.runner = ProcessRunner(kill_grace=CLI_KILL_GRACE)
        self._containers: set[str] = set()
        """Names of containers we created and have not removed (or, cleanup off, released)."""
        self._volume_locks: dict[str, anyio.Lock] = {}
        self._ready_volumes: set[str] = set()
        self.fills = 0
        """How many sidecar volumes this backend filled (tests and metrics read it)."""

    # -- running the CLI --

    async def docker_cli(
        self,
        *args: str,
        input: bytes | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> _Result:
        """Run ``docker <args>`` to completion (killed at once when cancelled)."""
        env = self.environ if extra_env is None else {**self.environ, **extra_env}
        completed = await anyio.run_process(
            [self.docker, *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
            env=env,
            # Our own session: a terminal Ctrl-C must reach only ozw.
            start_new_session=True,
        )
        return _Result(completed.returncode, completed.stdout, completed.stderr)

    async def _cleanup_call(self, *args: str) -> _Result | None:
        """A shielded, bounded clean-up call; None when it did not finish or run."""
        with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
            try:
                return await self.docker_cli(*args)
            except OSError as exc:
                logger.warning("docker %s failed: %s", args[0], exc)
        return None

    # -- start-up --

    async def check(self) -> None:
        """The CLI exists and the daemon answers on a supported platform."""
        resolved = shutil.which(self.docker, path=self.environ.get("PATH", os.defpath))
        if resolved is None:
            raise BackendUnavailable(
                f"docker backend: the docker CLI {self.docker!r} was not found"
            )
        self.docker = resolved
        try:
            with anyio.fail_after(CHECK_TIMEOUT):
                result = await self.docker_cli(
                    "version", "--format={{.Server.Os}}/{{.Server.Arch}}"
                )
        except TimeoutError:
            raise BackendUnavailable(
                f"docker backend: the Docker daemon did not answer within {CHECK_TIMEOUT:g}s"
            ) from None
        if not result.ok:
            raise BackendUnavailable(
                f"docker backend: cannot reach the Docker daemon: {result.error}"
            )
        os_name, _, arch = result.stdout.decode().strip().partition("/")
        platform = platform_of(os_name, arch)
        if platform not in SUPPORTED_PLATFORMS:
            raise BackendUnavailable(
                f"docker backend: the Docker daemon runs {platform}; supported are "
                + ", ".join(sorted(SUPPORTED_PLATFORMS))
            )
        self.platform = platform
        logger.info("docker daemon reachable (%s)", platform)

    async def recover(self) -> None:
        """Reap the containers a crashed earlier run of this worker id left behind."""
        await self.reap_leftovers()

    async def reap_leftovers(self) -> list[str]:
        """Remove (cleanup off: kill) containers of this worker id left by an earlier run.

        Returns their names. Containers this process created are never touched.
        """
        # Cleanup off keeps stopped leftovers for debugging: only running ones matter.
        which = "--all" if self.cleanup else "--filter=status=running"
        result = await self.docker_cli(
            "ps",
            which,
            f"--filter=label={LABEL_WORKER}={self.worker_id}",
            "--format={{.Names}}",
        )
        if not result.ok:
            logger.warning("could not list leftover containers: %s", result.error)
            return []
        names = [n for n in result.stdout.decode().split() if n and n not in self._containers]
        if not names:
            return []
        verb = "rm" if self.cleanup else "kill"
        action = ("rm", "--force", *names) if self.cleanup else ("kill", *names)
        outcome = await self.docker_cli(*action)
        if outcome.ok:
            done = "removed" if self.cleanup else "stopped (kept: cleanup is off)"
            logger.warning(
                "%s %d container(s) left by an earlier run of worker %s: %s",
                done,
                len(names),
                self.worker_id,
                ", ".join(names),
            )
        else:
            logger.warning("docker %s of leftover containers failed: %s", verb, outcome.error)
        return names

    async def daemon_platform(self) -> str:
        """The daemon's ``os/arch`` (asked once)."""
        if self.platform is None:
            result = await self.docker_cli("version", "--format={{.Server.Os}}/{{.Server.Arch}}")
            if not result.ok:
                raise TaskFailure(
                    FailureReason.IMAGE_PULL, f"cannot reach the Docker daemon: {result.error}"
                )
            os_name, _, arch = result.stdout.decode().strip().partition("/")
            self.platform = platform_of(os_name, arch)
        return self.platform

    # -- images --

    async def inspect_image(self, reference: str) -> LocalImage | None:
        """The local image ``reference`` names, or None when the daemon has none."""
        result = await self.docker_cli("image", "inspect", "--format={{json .}}", reference)
        if not result.ok:
            return None
        info = json.loads(result.stdout)
        return LocalImage(
            reference,
            str(info["Id"]),
            platform_of(str(info.get("Os", "")), str(info.get("Architecture", ""))),
        )

    async def ensure_image(
        self, reference: str, log: TaskLog, *, what: str = "image"
    ) -> LocalImage:
        """Pull (per ``pull_policy``) and platform-check ``reference``. Raises IMAGE_PULL."""
        policy = self.config.pull_policy
        image = None if policy == "always" else await self.inspect_image(reference)
        if image is None:
            if policy == "never":
                raise TaskFailure(
                    FailureReason.IMAGE_PULL,
                    f"{what} {reference} is not present and pull_policy is 'never'",
                )
            log.info("pulling %s %s", what, reference)
            started = time.monotonic()
            result = await self.docker_cli("pull", "--quiet", reference)
            if not result.ok:
                raise TaskFailure(
                    FailureReason.IMAGE_PULL,
                    f"could not pull {what} {reference}: {result.error}",
                )
            log.info("pulled %s %s in %.1fs", what, reference, time.monotonic() - started)
            image = await self.inspect_image(reference)
            if image is None:
                raise TaskFailure(
                    FailureReason.IMAGE_PULL, f"{what} {reference} vanished right after its pull"
                )
        daemon = await self.daemon_platform()
        if image.platform != daemon:
            raise TaskFailure(
                FailureReason.IMAGE_PULL,
                f"{what} {reference} is for {image.platform} but the Docker daemon runs {daemon}",
            )
        return image

    # -- sidecar volumes --

    def _lock_for(self, volume: str) -> anyio.Lock:
        lock = self._volume_locks.get(volume)
        if lock is None:
            lock = self._volume_locks[volume] = anyio.Lock()
        return lock

    async def prepare_sidecar_volume(self, image: LocalImage, log: TaskLog) -> str:
        """The filled volume of a sidecar image, filled once and reused. Raises SIDECAR_PREP.

        One lock per volume name: concurrent tasks wanting the same sidecar wait for the
        first one's fill and then reuse it.
        """
        volume = volume_name(image.reference, image.image_id)
        async with self._lock_for(volume):
            if volume in self._ready_volumes:
                # Cheap re-check: `docker volume prune` may have removed it meanwhile, and
                # `docker create` would then mount a new, empty volume without a word.
                if (await self.docker_cli("volume", "inspect", volume)).ok:
                    log.info("reusing sidecar volume %s", volume)
                    return volume
                self._ready_volumes.discard(volume)
            await self._fill_volume(volume, image, log)
            self._ready_volumes.add(volume)
        return volume

    async def _create_helper(self, image_id: str, *options: str) -> str:
        name = f"ozw-fill-{secrets.token_hex(6)}"
        self._containers.add(name)
        result = await self.docker_cli(
            "create",
            f"--name={name}",
            f"--label={LABEL_WORKER}={self.worker_id}",
            f"--label={LABEL_ROLE}={ROLE_FILL}",
            *options,
            image_id,
            FILL_COMMAND,
        )
        if not result.ok:
            raise TaskFailure(
                FailureReason.SIDECAR_PREP,
                f"could not create a container of sidecar image {image_id}: {result.error}",
            )
        return name

    async def _fill_volume(self, volume: str, image: LocalImage, log: TaskLog) -> None:
        existed = (await self.docker_cli("volume", "inspect", volume)).ok
        if not existed:
            created = await self.docker_cli(
                "volume",
                "create",
                f"--label={LABEL_IMAGE}={image.reference}",
                f"--label=ozw.image_id={image.image_id}",
                volume,
            )
            if not created.ok:
                raise TaskFailure(
                    FailureReason.SIDECAR_PREP,
                    f"could not create sidecar volume {volume}: {created.error}",
                )
        helpers: list[str] = []
        filled = False
        try:
            target = await self._create_helper(
                image.image_id, f"--volume={volume}:{FILL_MOUNT}:nocopy"
            )
            helpers.append(target)
            if existed:
                probe = await self.docker_cli("cp", f"{target}:{FILL_MOUNT}/{FILLED_MARKER}", "-")
                if probe.ok:
                    log.info("reusing sidecar volume %s", volume)
                    filled = True
                    return
                log.warning("sidecar volume %s was never completely filled; filling it", volume)
            log.info("filling sidecar volume %s from %s", volume, image.reference)
            started = time.monotonic()
            source = await self._create_helper(image.image_id)
            helpers.append(source)
            await self._stream_export(source, f"{target}:{FILL_MOUNT}", volume)
            marked = await self.docker_cli(
                "cp", "-", f"{target}:{FILL_MOUNT}", input=marker_tar(image.image_id)
            )
            if not marked.ok:
                raise TaskFailure(
                    FailureReason.SIDECAR_PREP,
                    f"could not mark sidecar volume {volume} as filled: {marked.error}",
                )
            self.fills += 1
            filled = True
            log.info("filled sidecar volume %s in %.1fs", volume, time.monotonic() - started)
        finally:
            with anyio.CancelScope(shield=True):
                if helpers:
                    await self._cleanup_call("rm", "--force", *helpers)
                    self._containers.difference_update(helpers)
                if not filled:
                    # Never leave a half-filled volume behind under its final name.
                    removed = await self._cleanup_call("volume", "rm", "--force", volume)
                    if removed is None or not removed.ok:
                        log.warning("could not remove half-filled sidecar volume %s", volume)

    async def _stream_export(self, source: str, destination: str, volume: str) -> None:
        """``docker export <source> | docker cp - <destination>``, through an OS pipe."""
        read_fd, write_fd = os.pipe()
        processes: list[anyio.abc.Process] = []
        try:
            processes.append(
                await anyio.open_process(
                    [self.docker, "export", source],
                    stdin=subprocess.DEVNULL,
                    stdout=write_fd,
                    stderr=subprocess.PIPE,
                    env=self.environ,
                    start_new_session=True,
                )
            )
            processes.append(
                await anyio.open_process(
                    [self.docker, "cp", "-", destination],
                    stdin=read_fd,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=self.environ,
                    start_new_session=True,
                )
            )
        except BaseException:
            for process in processes:
                process.kill()
            raise
        finally:
            # The children hold their own copies; ours would keep the pipe open forever.
            os.close(read_fd)
            os.close(write_fd)
        errors: list[bytes] = [b"", b""]

        async def finish(index: int) -> None:
            process = processes[index]
            assert process.stderr is not None
            chunks = [chunk async for chunk in process.stderr]
            errors[index] = b"".join(chunks)
            await process.wait()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(finish, 0)
                tg.start_soon(finish, 1)
        except BaseException:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            raise
        finally:
            with anyio.CancelScope(shield=True):
                for process in processes:
                    await process.aclose()
        for process, stderr, step in zip(processes, errors, ("export", "cp"), strict=True):
            if process.returncode != 0:
                raise TaskFailure(
                    FailureReason.SIDECAR_PREP,
                    f"could not fill sidecar volume {volume} (docker {step}): "
                    f"{docker_error(stderr)}",
                )

    # -- containers --

    def track(self, name: str) -> None:
        self._containers.add(name)

    def untrack(self, name: str) -> None:
        self._containers.discard(name)

    @property
    def live_containers(self) -> frozenset[str]:
        """Containers this backend created and has not removed or released."""
        return frozenset(self._containers)

    async def stop_container(self, name: str) -> None:
        """Stop (``docker stop`` with ``kill_grace``) and, cleanup on, remove; shielded."""
        grace = max(0, math.ceil(self.config.kill_grace))
        with anyio.move_on_after(grace + CLEANUP_TIMEOUT, shield=True):
            await self._cleanup_call("stop", f"--time={grace}", name)
            if self.cleanup:
                await self.remove_container(name)
            else:
                self.untrack(name)

    async def remove_container(self, name: str) -> bool:
        """``docker rm -f``; True when the container is gone (also when it never existed)."""
        result = await self._cleanup_call("rm", "--force", name)
        gone = result is not None and (result.ok or "No such container" in result.error)
        if gone:
            self.untrack(name)
        return gone

    def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
        return DockerTaskRun(self, params, log)

    async def kill_all(self) -> None:
        """Stop every container of ours now: ``rm -f`` (cleanup off: ``kill``), no grace."""
        self.runner.kill_all()
        names = sorted(self._containers)
        if not names:
            return
        if self.cleanup:
            result = await self._cleanup_call("rm", "--force", *names)
            if result is not None:
                self._containers.difference_update(names)
        else:
            await self._cleanup_call("kill", *names)

    async def aclose(self) -> None:
        """Nothing is held between tasks: sidecar volumes are kept on purpose."""


class DockerTaskRun(TaskRun):
    """One task in one container."""

    def __init__(self, backend: DockerBackend, params: TaskParams, log: TaskLog) -> None:
        self.backend = backend
        self.params = params
        self.log = log
        self.image: LocalImage | None = None
        self.sidecars: list[SidecarMount] = []
        self.env: dict[str, str] = {}
        self.container: str | None = None

    def _validate(self) -> None:
        params = self.params
        if not is_valid_reference(params.image):
            raise TaskFailure(
                FailureReason.IMAGE_PULL, f"image {params.image!r} is not a valid image reference"
            )
        for sidecar in params.sidecars:
            if (problem := sidecar_problem(sidecar.image, sidecar.mount_path)) is not None:
                raise TaskFailure(FailureReason.SIDECAR_PREP, problem)
        if duplicates := duplicate_mount_paths(s.mount_path for s in params.sidecars):
            raise TaskFailure(
                FailureReason.SIDECAR_PREP,
                "two sidecars share the mount path " + ", ".join(duplicates),
            )
        self.env = container_environment(
            params.env, self.backend.config.environment, self.backend.environ
        )
        if (problem := environment_problem(self.env)) is not None:
            raise TaskFailure(FailureReason.CONTAINER_CREATE, problem)

    async def setup(self) -> None:
        """Validate, pull the image, prepare every sidecar volume."""
        self._validate()
        backend = self.backend
        self.image = await backend.ensure_image(self.params.image, self.log)
        for sidecar in self.params.sidecars:
            image = await backend.ensure_image(sidecar.image, self.log, what="sidecar image")
            volume = await backend.prepare_sidecar_volume(image, self.log)
            self.sidecars.append(SidecarMount(volume, sidecar.mount_path, sidecar.read_write))

    def spec(self, name: str, env_file: str | None) -> ContainerSpec:
        assert self.image is not None, "setup() first"
        params = self.params
        return ContainerSpec(
            name=name,
            image_id=self.image.image_id,
            image_ref=self.image.reference,
            worker_id=self.backend.worker_id,
            task_id=params.task_id,
            execution_id=params.execution_id,
            base_args=params.base_args,
            env_names=plan_environment(self.env).names,
            sidecars=tuple(self.sidecars),
            volumes=self.backend.config.volumes,
            shape=params.instance_shape,
            env_file=env_file,
        )

    async def execute(self) -> ExecuteResult:
        """Create, start (output relayed) and wait for the container; classify its end."""
        backend = self.backend
        name = container_name(backend.worker_id, self.params.task_id, secrets.token_hex(4))
        self.container = name
        backend.track(name)
        try:
            await self._create(name)
            return await self._run(name)
        except TaskFailure:
            raise  # the container has ended or never ran: teardown removes it
        except BaseException:
            # Cancelled (or broken): killing the CLI does not stop a container.
            self.log.info("stopping container %s", name)
            await backend.stop_container(name)
            raise

    async def _create(self, name: str) -> None:
        backend = self.backend
        plan = plan_environment(self.env)
        with tempfile.TemporaryDirectory(prefix="ozw-env-") as private:
            env_file = None
            if plan.file_lines:
                env_file = os.path.join(private, "env")
                await anyio.to_thread.run_sync(_write_private, env_file, plan.file_lines)
            args = create_args(self.spec(name, env_file))
            result = await backend.docker_cli(*args, extra_env=plan.cli_values)
        if not result.ok:
            raise TaskFailure(
                FailureReason.CONTAINER_CREATE, f"could not create the container: {result.error}"
            )
        self.log.info("container %s created (%s)", name, result.stdout.decode().strip()[:12])

    async def _run(self, name: str) -> ExecuteResult:
        backend = self.backend
        stderr_tail: collections.deque[str] = collections.deque(maxlen=5)
        code = await backend.runner.run(
            [backend.docker, "start", "--attach", name],
            log=self.log,
            label="agent",
            env=backend.environ,
            stderr_tail=stderr_tail,
        )
        tail = list(stderr_tail)
        state = await self._inspect(name)
        if state is None:
            raise TaskFailure(
                FailureReason.CONTAINER_WAIT,
                f"could not read the container's state (docker start exited with {code}): "
                + (tail[-1] if tail else "no output"),
            )
        if state.running:
            # The CLI lost its attachment while the container runs on: wait for it.
            waited = await backend.docker_cli("wait", name)
            if not waited.ok:
                raise TaskFailure(
                    FailureReason.CONTAINER_WAIT,
                    f"could not wait for the container: {waited.error}",
                )
            state = await self._inspect(name)
            if state is None or state.running:
                raise TaskFailure(
                    FailureReason.CONTAINER_WAIT, "could not read the container's exit status"
                )
        if not state.started and not state.error and tail:
            state = attrs.evolve(state, error=tail[-1])
        shape = self.params.instance_shape
        failure = classify_exit(state, memory_bytes(shape.memory_gb if shape else None))
        if failure is not None:
            raise failure
        if state.oom_killed:
            self.log.warning("the engine OOM-killed a process of the container; the agent exited 0")
        if not backend.cleanup:
            backend.untrack(name)
        return ExecuteResult.COMPLETED

    async def _inspect(self, name: str) -> ContainerState | None:
        result = await self.backend.docker_cli(
            "container", "inspect", "--format={{json .State}}", name
        )
        if not result.ok:
            return None
        return ContainerState.from_json(json.loads(result.stdout))

    async def teardown(self) -> None:
        """Remove the container unless cleanup is off."""
        name = self.container
        if name is None:
            return
        if not self.backend.cleanup:
            self.backend.untrack(name)
            self.log.info("container %s kept (cleanup is off)", name)
            return
        if not await self.backend.remove_container(name):
            raise RuntimeError(f"could not remove container {name}")


def _write_private(path: str, lines: Sequence[str]) -> None:
    """Write an env-file readable by us only (it holds secrets for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write("".join(f"{line}\n" for line in lines))
