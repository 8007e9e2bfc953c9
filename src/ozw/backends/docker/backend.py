"""The docker backend proper: the CLI calls of one worker's tasks.

:class:`DockerBackend` checks the daemon, reaps leftovers, pulls and inspects images
and owns the containers it creates; :class:`DockerTaskRun` is one task in one
container. The rules they follow live in :mod:`~ozw.backends.docker.rules`, the
sidecar volumes in :mod:`~ozw.backends.docker.volumes`.

Choices where the contract is silent:

- A pull failure or platform mismatch is ``image_pull`` for sidecar images too; an
  invalid sidecar reference, a bad mount path or a failed fill is ``sidecar_prep``.
- With cleanup off, containers are kept (stopped) after the task, after cancellation,
  after a ``container_wait`` failure (the container may still run: it is stopped with
  ``kill_grace``) and at start-up; leftovers of a crashed run are then only killed,
  not removed. A ``read_write`` sidecar's private volume is kept with its container.
- The start-up reaper removes every container labelled with this worker's id, and
  (cleanup on) every private ``read_write`` sidecar volume labelled with it: two live
  workers must not share a worker id.
- Every short docker call of a task (image and volume inspect, volume create,
  ``docker create``, container inspect, ``cp``) is bounded by ``call_timeout``
  (:data:`CALL_TIMEOUT`); task timeouts are off by default and a hung daemon must not
  hold a slot forever. A pull and the export that fills a sidecar volume get the
  long ``transfer_timeout`` (:data:`TRANSFER_TIMEOUT`), since big images on slow
  links legitimately take long. A timeout fails the task with the reason of the
  phase: ``image_pull``, ``sidecar_prep``, ``container_create`` or
  ``container_wait``. ``docker wait`` (the agent's own run time) is not bounded:
  that is ``task_timeout``'s job.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, ClassVar, Final, Self, Unpack

import anyio
import anyio.abc

from ozw.backends.base import ProcessBackend, TaskRun, WorkerSettings
from ozw.backends.docker.cli import CLI_KILL_GRACE, CallResult, DockerCLI
from ozw.backends.docker.engine_api import EngineConnections
from ozw.backends.docker.images import Images, ask_daemon
from ozw.backends.docker.reaper import Reaper
from ozw.backends.docker.task import DockerTaskRun
from ozw.backends.docker.volumes import SidecarVolumes
from ozw.backends.execution import inherited_environment
from ozw.config import DockerConfig
from ozw.tasks.failures import BackendUnavailable
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog

logger = logging.getLogger(__name__)

SUPPORTED_PLATFORMS: Final = frozenset({"linux/amd64", "linux/arm64"})
CHECK_TIMEOUT: Final = 60.0
"""Bound of the start-up check: an unreachable TCP daemon must not hang start-up."""


class DockerBackend(ProcessBackend):
    """Runs each task in a container through the docker CLI (see the package docstring).

    Args:
        config: the ``[backend.docker]`` table.
        worker_id: labels every container (``ozw.worker_id``) so leftovers of this
            worker can be found again.
        cleanup: remove containers after their task; off keeps them for debugging.
        environ: the worker's environment (default ``os.environ``): the docker CLI
            runs with it (without ``WARP_API_KEY``), and configured variables without
            value inherit from it.
        docker: the docker CLI (a name on ``PATH`` or a path).
    """

    name: ClassVar[str] = "docker"

    def __init__(
        self, config: DockerConfig, *, docker: str = "docker", **settings: Unpack[WorkerSettings]
    ) -> None:
        super().__init__(kill_grace=CLI_KILL_GRACE, **settings)
        self.config = config
        self.cli = DockerCLI(docker, inherited_environment(self.environ), self.runner)
        """Every docker call, and what this backend created."""
        self.images = Images(self.cli, config.pull_policy)
        self.volumes = SidecarVolumes(self.cli, self.worker_id)
        """The sidecar volumes, filled once and reused."""
        self.reaper = Reaper(self.cli, self.worker_id, cleanup=self.cleanup)
        self.engines = EngineConnections(self.cli)
        """Engine connections for the tasks, one kept open ahead."""
        self._background: anyio.abc.TaskGroup | None = None
        """Runs the sweep while the backend is entered (``async with``)."""

    @property
    def platform(self) -> str | None:
        """The daemon's ``os/arch`` once known."""
        return self.images.platform

    @property
    def fills(self) -> int:
        """How many sidecar volumes this backend filled (tests and metrics read it)."""
        return self.volumes.fills

    @property
    def live_containers(self) -> frozenset[str]:
        """Containers this backend created and has not removed or released."""
        return frozenset(self.cli.containers)

    # -- start-up --

    async def check(self) -> str:
        """The CLI exists and the daemon answers on a supported platform."""
        cli = self.cli
        resolved = shutil.which(cli.docker, path=self.environ.get("PATH", os.defpath))
        if resolved is None:
            raise BackendUnavailable(f"docker backend: the docker CLI {cli.docker!r} was not found")
        cli.docker = resolved
        try:
            with anyio.fail_after(CHECK_TIMEOUT):
                daemon = await ask_daemon(cli)
        except TimeoutError:
            raise BackendUnavailable(
                f"docker backend: the Docker daemon did not answer within {CHECK_TIMEOUT:g}s"
            ) from None
        if isinstance(daemon, CallResult):
            raise BackendUnavailable(
                f"docker backend: cannot reach the Docker daemon: {daemon.error}"
            )
        if daemon.platform not in SUPPORTED_PLATFORMS:
            raise BackendUnavailable(
                f"docker backend: the Docker daemon runs {daemon.platform}; supported are "
                + ", ".join(sorted(SUPPORTED_PLATFORMS))
            )
        self.images.platform = daemon.platform
        return f"docker daemon {daemon.version or '(unknown version)'} on {daemon.platform}"

    async def recover(self) -> None:
        """Reap the containers a crashed earlier run of this worker id left behind."""
        await self.reap_leftovers()

    async def reap_leftovers(self) -> list[str]:
        """Remove (cleanup off: kill) containers of this worker id left by an earlier run.

        Returns their names. Containers this process created are never touched.
        """
        with anyio.move_on_after(self.cli.call_timeout):
            names, _ = await self.reaper.reap()
            return names
        logger.warning(
            "reaping leftovers of worker %s: the docker CLI did not finish within %gs",
            self.worker_id,
            self.cli.call_timeout,
        )
        return []

    async def __aenter__(self) -> Self:
        """Start the sweep of what a teardown could not remove (see :mod:`.reaper`), and
        keep a spare engine connection for the next task until the backend closes."""
        self.engines.keep_spares()
        self._background = anyio.create_task_group()
        await self._background.__aenter__()
        self._background.start_soon(self.reaper.sweep_when_needed)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        """Stop the sweep, then close as every backend does."""
        if self._background is not None:
            self._background.cancel_scope.cancel()
            await self._background.__aexit__(None, None, None)
            self._background = None
        await super().__aexit__(*exc_info)

    # -- tasks --

    def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
        return DockerTaskRun(self, params, log)

    async def kill_all(self) -> None:
        """Stop every container of ours now: ``rm -f`` (cleanup off: ``kill``), no grace."""
        await super().kill_all()
        names = sorted(self.cli.containers)
        if not names:
            return
        if self.cleanup:
            result = await self.cli.cleanup("rm", "--force", *names)
            if result is not None:
                self.cli.containers.difference_update(names)
        else:
            await self.cli.cleanup("kill", *names)

    async def aclose(self) -> None:
        """Close the spare engine connection (sidecar volumes are kept on purpose)."""
        await self.engines.aclose()
