"""The docker backend: every task in its own container (docs/protocol.md, "docker").

Everything goes through the ``docker`` CLI, run with the worker's own environment, so
the daemon, contexts, TLS settings and registry credentials are found exactly as the
operator's ``docker`` command finds them (``DOCKER_HOST``, ``DOCKER_CONTEXT``,
``DOCKER_CONFIG``, ``docker login``, credential helpers).

Every call goes through :class:`~ozw.backends.docker.cli.DockerCLI` (bounded,
cancellable, no thread pool); python-on-whales' client is not used (its calls block
and cannot be cancelled), only its typed models, to read what ``inspect`` and
``version`` print (:mod:`~ozw.backends.docker.inspect`).

One task::

    setup    validate the image reference, sidecars and environment (no I/O);
             pull / inspect the image per ``pull_policy``; refuse a foreign platform;
             for each sidecar: pull it and fill (or reuse) its shared volume,
             mounted read-only; a read_write sidecar gets a private volume
             <shared>-rw-<random>, filled for this task
    execute  docker create (labelled, named ozw-<worker>-<task>-<random>; an engine
                            API request through `docker system dial-stdio`, so
                            environment values travel in a pipe only)
             docker start -a  (output relayed into the task log, cancellable)
             docker inspect   (exit code, OOMKilled: after a non-zero exit only)
    teardown (after the result is reported) docker inspect after an exit 0 (an OOM
             warning), docker rm -f, docker volume rm of private volumes (unless
             cleanup is off)

The modules, one idea each:

- :mod:`~ozw.backends.docker.references`: the image reference grammar and the names
  of containers and sidecar volumes.
- :mod:`~ozw.backends.docker.inspect`: ``inspect`` / ``version`` output, parsed.
- :mod:`~ozw.backends.docker.rules`: the pure rules of a task container
  (resources, mounts, environment, ``docker create`` arguments, exit classification).
- :mod:`~ozw.backends.docker.cli`: the CLI runner (bounded calls, clean-up calls,
  export streaming) and the registry of containers and volumes the backend made.
- :mod:`~ozw.backends.docker.engine_api`: engine API requests through the CLI's
  own connection (``docker create``, the sidecar volume check), and the spare
  connection opened ahead for the next task.
- :mod:`~ozw.backends.docker.images`: pulls, inspections, the platform check.
- :mod:`~ozw.backends.docker.volumes`: sidecar volumes, filled once and reused
  (read-only), and the private per-task copies of ``read_write`` sidecars.
- :mod:`~ozw.backends.docker.reaper`: leftovers of an earlier run of this worker id.
- :mod:`~ozw.backends.docker.backend`: :class:`DockerBackend`, which owns all of the above.
- :mod:`~ozw.backends.docker.task`: :class:`DockerTaskRun`, one task's container, run
  with its backend's parts.
"""

from ozw.backends.docker.backend import SUPPORTED_PLATFORMS, DockerBackend
from ozw.backends.docker.task import DockerTaskRun

__all__ = ["SUPPORTED_PLATFORMS", "DockerBackend", "DockerTaskRun"]
