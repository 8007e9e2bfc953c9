"""The docker backend: every task in its own container (PROTOCOL.md 5, "docker").

Everything goes through the ``docker`` CLI, run with the worker's own environment, so
the daemon, contexts, TLS settings and registry credentials are found exactly as the
operator's ``docker`` command finds them (``DOCKER_HOST``, ``DOCKER_CONTEXT``,
``DOCKER_CONFIG``, ``docker login``, credential helpers).

python-on-whales is deliberately not used here: every call is an
``anyio.run_process`` (short calls, each bounded by ``call_timeout``; pulls and
sidecar fills by the long ``transfer_timeout``) or a process under
:class:`~ozw.processes.ProcessRunner` (``docker start -a``, whose output is relayed
live). That keeps one code path that cancellation always reaches, needs no thread
pool, and lets each call get its own environment, which the secret-passing rule
(see :mod:`~ozw.backends.docker.container`) depends on.

One task::

    setup    validate the image reference, sidecars and environment (no I/O);
             pull / inspect the image per ``pull_policy``; refuse a foreign platform;
             for each sidecar: pull it and fill (or reuse) its shared volume,
             mounted read-only; a read_write sidecar gets a private volume
             <shared>-rw-<random>, filled for this task
    execute  docker create (labelled, named ozw-<worker>-<task>-<random>; values in a
                            0600 env-file, removed when create returns)
             docker start -a  (output relayed into the task log, cancellable)
             docker inspect   (exit code, OOMKilled)
    teardown docker rm -f, docker volume rm of private volumes (unless cleanup is off)

The modules, one idea each:

- :mod:`~ozw.backends.docker.references`: the image reference grammar and the names
  of containers and sidecar volumes.
- :mod:`~ozw.backends.docker.container`: the pure rules of a task container
  (resources, mounts, environment, ``docker create`` arguments, exit classification).
- :mod:`~ozw.backends.docker.volumes`: sidecar volumes, filled once and reused
  (read-only), and the private per-task copies of ``read_write`` sidecars.
- :mod:`~ozw.backends.docker.backend`: :class:`DockerBackend` and
  :class:`DockerTaskRun`, the CLI calls.
"""

from ozw.backends.docker.backend import (
    CALL_TIMEOUT,
    CHECK_TIMEOUT,
    CLEANUP_TIMEOUT,
    CLI_KILL_GRACE,
    SUPPORTED_PLATFORMS,
    TRANSFER_TIMEOUT,
    DockerBackend,
    DockerTaskRun,
    LocalImage,
)
from ozw.backends.docker.container import (
    ENTRYPOINT,
    ENV_FILE_MAX_LINE,
    LABEL_EXECUTION,
    LABEL_IMAGE,
    LABEL_ROLE,
    LABEL_TASK,
    LABEL_WORKER,
    ROLE_FILL,
    ROLE_RW,
    ROLE_TASK,
    WORKDIR,
    ContainerSpec,
    ContainerState,
    EnvPlan,
    SidecarMount,
    classify_exit,
    cli_sensitive,
    container_environment,
    cpus_value,
    create_args,
    docker_error,
    duplicate_mount_paths,
    env_file_problem,
    environment_problem,
    memory_bytes,
    normalise_mount_path,
    plan_environment,
    resource_args,
    sidecar_problem,
    task_labels,
)
from ozw.backends.docker.references import (
    MAX_NAME_LENGTH,
    MAX_NAME_PART,
    MAX_VOLUME_REPO,
    ImageReference,
    InvalidReference,
    container_name,
    digest_hex,
    is_valid_reference,
    parse_reference,
    platform_of,
    private_volume_name,
    sanitise_name_part,
    volume_name,
)
from ozw.backends.docker.volumes import (
    FILL_COMMAND,
    FILL_MOUNT,
    FILLED_MARKER,
    SidecarVolumes,
    marker_tar,
)

__all__ = [
    "CALL_TIMEOUT",
    "CHECK_TIMEOUT",
    "CLEANUP_TIMEOUT",
    "CLI_KILL_GRACE",
    "ENTRYPOINT",
    "ENV_FILE_MAX_LINE",
    "FILLED_MARKER",
    "FILL_COMMAND",
    "FILL_MOUNT",
    "LABEL_EXECUTION",
    "LABEL_IMAGE",
    "LABEL_ROLE",
    "LABEL_TASK",
    "LABEL_WORKER",
    "MAX_NAME_LENGTH",
    "MAX_NAME_PART",
    "MAX_VOLUME_REPO",
    "ROLE_FILL",
    "ROLE_RW",
    "ROLE_TASK",
    "SUPPORTED_PLATFORMS",
    "TRANSFER_TIMEOUT",
    "WORKDIR",
    "ContainerSpec",
    "ContainerState",
    "DockerBackend",
    "DockerTaskRun",
    "EnvPlan",
    "ImageReference",
    "InvalidReference",
    "LocalImage",
    "SidecarMount",
    "SidecarVolumes",
    "classify_exit",
    "cli_sensitive",
    "container_environment",
    "container_name",
    "cpus_value",
    "create_args",
    "digest_hex",
    "docker_error",
    "duplicate_mount_paths",
    "env_file_problem",
    "environment_problem",
    "is_valid_reference",
    "marker_tar",
    "memory_bytes",
    "normalise_mount_path",
    "parse_reference",
    "plan_environment",
    "platform_of",
    "private_volume_name",
    "resource_args",
    "sanitise_name_part",
    "sidecar_problem",
    "task_labels",
    "volume_name",
]
