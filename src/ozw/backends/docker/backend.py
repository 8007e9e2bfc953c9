"""The docker backend proper: the CLI calls of one worker's tasks.

:class:`DockerBackend` checks the daemon, reaps leftovers, pulls and inspects images
and owns the containers it creates; :class:`DockerTaskRun` is one task in one
container. The rules they follow live in :mod:`~ozw.backends.docker.container`, the
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

import collections
import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar, Final

import anyio
import attrs

from ozw.backends.base import Backend, ExecuteResult, TaskRun
from ozw.backends.docker.container import (
    LABEL_ROLE,
    LABEL_TASK,
    LABEL_WORKER,
    ROLE_RW,
    ContainerSpec,
    ContainerState,
    SidecarMount,
    classify_exit,
    container_environment,
    create_args,
    docker_error,
    duplicate_mount_paths,
    environment_problem,
    memory_bytes,
    plan_environment,
    sidecar_problem,
)
from ozw.backends.docker.references import (
    container_name,
    is_valid_reference,
    platform_of,
    private_volume_name,
    volume_name,
)
from ozw.backends.docker.volumes import SidecarVolumes
from ozw.config import DockerConfig
from ozw.failures import BackendUnavailable, FailureReason, TaskFailure
from ozw.logs import TaskLog
from ozw.params import TaskParams
from ozw.processes import ProcessRunner

logger = logging.getLogger("ozw.backends.docker")

SUPPORTED_PLATFORMS: Final = frozenset({"linux/amd64", "linux/arm64"})
CHECK_TIMEOUT: Final = 60.0
"""Bound of the start-up check: an unreachable TCP daemon must not hang start-up."""
CLEANUP_TIMEOUT: Final = 60.0
"""Bound of each shielded clean-up call (rm -f, volume rm), beyond any stop grace."""
CALL_TIMEOUT: Final = 120.0
"""Default bound of each short docker call of a task (inspect, create, volume create)."""
TRANSFER_TIMEOUT: Final = 3600.0
"""Default bound of a pull and of the export filling a sidecar volume: long, because
big images on slow links take long, but finite, because a hung daemon must not hold
a slot forever when ``task_timeout`` is off."""
CLI_KILL_GRACE: Final = 0.5
"""Grace of the ``docker start -a`` CLI on cancellation. It proxies our SIGTERM to the
container and would then wait for it; the container's own grace is ``docker stop``'s."""


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
    """Runs each task in a container through the docker CLI (see the package docstring).

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
        self._private_volumes: set[str] = set()
        """Private ``read_write`` sidecar volumes of running tasks (the reaper skips them)."""
        self.call_timeout: float = CALL_TIMEOUT
        """Bound of each short docker call of a task (see :meth:`bounded`)."""
        self.transfer_timeout: float = TRANSFER_TIMEOUT
        """Bound of a pull and of a sidecar volume's export stream."""
        self.volumes = SidecarVolumes(self)
        """The sidecar volumes, filled once and reused."""

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

    @contextlib.contextmanager
    def bounded(self, reason: FailureReason, what: str, *, long: bool = False) -> Iterator[None]:
        """Bound the docker calls inside; a timeout fails the task with ``reason``.

        ``call_timeout`` applies, or ``transfer_timeout`` when ``long``. ``what`` says
        what was being done ("inspecting image x") in the failure's message.
        """
        seconds = self.transfer_timeout if long else self.call_timeout
        try:
            with anyio.fail_after(seconds):
                yield
        except TimeoutError:
            raise TaskFailure(
                reason,
                f"{what}: the docker CLI did not finish within {seconds:g}s "
                "(is the Docker daemon hung?)",
            ) from None

    async def _cleanup_call(self, *args: str) -> _Result | None:
        """A shielded, bounded clean-up call; None when it did not finish or run."""
        with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
            try:
                return await self.docker_cli(*args)
            except OSError as exc:
                logger.warning("docker %s failed: %s", args[0], exc)
        return None

    # -- start-up --

    async def check(self) -> str:
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
                    "version", "--format={{.Server.Os}}/{{.Server.Arch}} {{.Server.Version}}"
                )
        except TimeoutError:
            raise BackendUnavailable(
                f"docker backend: the Docker daemon did not answer within {CHECK_TIMEOUT:g}s"
            ) from None
        if not result.ok:
            raise BackendUnavailable(
                f"docker backend: cannot reach the Docker daemon: {result.error}"
            )
        where, _, version = result.stdout.decode().strip().partition(" ")
        os_name, _, arch = where.partition("/")
        platform = platform_of(os_name, arch)
        if platform not in SUPPORTED_PLATFORMS:
            raise BackendUnavailable(
                f"docker backend: the Docker daemon runs {platform}; supported are "
                + ", ".join(sorted(SUPPORTED_PLATFORMS))
            )
        self.platform = platform
        return f"docker daemon {version or '(unknown version)'} on {platform}"

    async def recover(self) -> None:
        """Reap the containers a crashed earlier run of this worker id left behind."""
        await self.reap_leftovers()

    async def reap_leftovers(self) -> list[str]:
        """Remove (cleanup off: kill) containers of this worker id left by an earlier run.

        Returns their names. Containers this process created are never touched.
        """
        try:
            with anyio.fail_after(self.call_timeout):
                names = await self._reap_containers()
                if self.cleanup:
                    await self._reap_private_volumes()
        except TimeoutError:
            logger.warning(
                "reaping leftovers of worker %s: the docker CLI did not finish within %gs",
                self.worker_id,
                self.call_timeout,
            )
            return []
        return names

    async def _reap_containers(self) -> list[str]:
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

    async def _reap_private_volumes(self) -> None:
        """Remove the private read-write sidecar volumes an earlier run left behind."""
        result = await self.docker_cli(
            "volume",
            "ls",
            "--quiet",
            f"--filter=label={LABEL_WORKER}={self.worker_id}",
            f"--filter=label={LABEL_ROLE}={ROLE_RW}",
        )
        if not result.ok:
            logger.warning("could not list leftover sidecar volumes: %s", result.error)
            return
        names = [n for n in result.stdout.decode().split() if n not in self._private_volumes]
        if not names:
            return
        outcome = await self.docker_cli("volume", "rm", "--force", *names)
        if outcome.ok:
            logger.warning(
                "removed %d read-write sidecar volume(s) left by an earlier run of worker %s: %s",
                len(names),
                self.worker_id,
                ", ".join(names),
            )
        else:
            logger.warning("docker volume rm of leftover volumes failed: %s", outcome.error)

    async def daemon_platform(self) -> str:
        """The daemon's ``os/arch`` (asked once)."""
        if self.platform is None:
            with self.bounded(FailureReason.IMAGE_PULL, "asking the daemon's platform"):
                result = await self.docker_cli(
                    "version", "--format={{.Server.Os}}/{{.Server.Arch}}"
                )
            if not result.ok:
                raise TaskFailure(
                    FailureReason.IMAGE_PULL, f"cannot reach the Docker daemon: {result.error}"
                )
            os_name, _, arch = result.stdout.decode().strip().partition("/")
            self.platform = platform_of(os_name, arch)
        return self.platform

    # -- images --

    async def inspect_image(self, reference: str) -> LocalImage | None:
        """The local image ``reference`` names, or None when the daemon has none.

        Bounded by ``call_timeout``; a timeout is ``image_pull``.
        """
        with self.bounded(FailureReason.IMAGE_PULL, f"inspecting image {reference}"):
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
            with self.bounded(FailureReason.IMAGE_PULL, f"pulling {what} {reference}", long=True):
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

    @property
    def fills(self) -> int:
        """How many sidecar volumes this backend filled (tests and metrics read it)."""
        return self.volumes.fills

    async def prepare_sidecar_volume(self, image: LocalImage, log: TaskLog) -> str:
        """The shared filled volume of a sidecar image (see :class:`SidecarVolumes`)."""
        return await self.volumes.prepare_sidecar_volume(image, log)

    def track_volume(self, name: str) -> None:
        self._private_volumes.add(name)

    def untrack_volume(self, name: str) -> None:
        self._private_volumes.discard(name)

    async def remove_volume(self, name: str) -> bool:
        """``docker volume rm -f``; True when the volume is gone (or never existed)."""
        result = await self._cleanup_call("volume", "rm", "--force", name)
        gone = result is not None and (result.ok or "no such volume" in result.error.lower())
        if gone:
            self.untrack_volume(name)
        return gone

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
    """One task in one container (plus a private volume per ``read_write`` sidecar)."""

    def __init__(self, backend: DockerBackend, params: TaskParams, log: TaskLog) -> None:
        self.backend = backend
        self.params = params
        self.log = log
        self.image: LocalImage | None = None
        self.sidecars: list[SidecarMount] = []
        self.env: dict[str, str] = {}
        self.suffix = secrets.token_hex(4)
        """Random suffix of the container's name and of private sidecar volumes."""
        self.container: str | None = None
        self.private_volumes: list[str] = []
        """Private ``read_write`` sidecar volumes, registered before their creation."""

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
            if sidecar.read_write:
                volume = await self._private_volume(image)
            else:
                volume = await backend.prepare_sidecar_volume(image, self.log)
            self.sidecars.append(SidecarMount(volume, sidecar.mount_path, sidecar.read_write))

    async def _private_volume(self, image: LocalImage) -> str:
        """A volume of this task's own, filled from ``image`` (a ``read_write`` sidecar)."""
        backend = self.backend
        shared = volume_name(image.reference, image.image_id)
        volume = private_volume_name(shared, self.suffix)
        # Registered first: teardown removes it even if a cancellation hits mid-create.
        self.private_volumes.append(volume)
        backend.track_volume(volume)
        labels = [
            f"--label={LABEL_WORKER}={backend.worker_id}",
            f"--label={LABEL_TASK}={self.params.task_id}",
            f"--label={LABEL_ROLE}={ROLE_RW}",
        ]
        await backend.volumes.prepare_private_volume(volume, image, self.log, labels=labels)
        return volume

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
        name = container_name(backend.worker_id, self.params.task_id, self.suffix)
        self.container = name
        backend.track(name)
        try:
            await self._create(name)
            return await self._run(name)
        except TaskFailure as failure:
            if failure.reason is FailureReason.CONTAINER_WAIT:
                # We lost track of the container, which may still run: stop it (with
                # cleanup off it is kept, stopped, for debugging).
                self.log.info("stopping container %s", name)
                await backend.stop_container(name)
            raise  # otherwise it has ended or never ran: teardown removes it
        except BaseException:
            # Cancelled (or broken): killing the CLI does not stop a container.
            self.log.info("stopping container %s", name)
            await backend.stop_container(name)
            raise

    async def _create(self, name: str) -> None:
        backend = self.backend
        plan = plan_environment(self.env)
        with (
            backend.bounded(FailureReason.CONTAINER_CREATE, f"creating container {name}"),
            tempfile.TemporaryDirectory(prefix="ozw-env-") as private,
        ):
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
        backend = self.backend
        with backend.bounded(FailureReason.CONTAINER_WAIT, f"inspecting container {name}"):
            result = await backend.docker_cli(
                "container", "inspect", "--format={{json .State}}", name
            )
        if not result.ok:
            return None
        return ContainerState.from_json(json.loads(result.stdout))

    async def teardown(self) -> None:
        """Remove the container, then the private sidecar volumes, unless cleanup is off."""
        backend = self.backend
        name = self.container
        if not backend.cleanup:
            if name is not None:
                backend.untrack(name)
                self.log.info("container %s kept (cleanup is off)", name)
            for volume in self.private_volumes:
                backend.untrack_volume(volume)
                self.log.info("read-write sidecar volume %s kept (cleanup is off)", volume)
            return
        problems: list[str] = []
        if name is not None and not await backend.remove_container(name):
            problems.append(f"could not remove container {name}")
        for volume in self.private_volumes:
            if not await backend.remove_volume(volume):
                problems.append(f"could not remove read-write sidecar volume {volume}")
        if problems:
            raise RuntimeError("; ".join(problems))


def _write_private(path: str, lines: Sequence[str]) -> None:
    """Write an env-file readable by us only (it holds secrets for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write("".join(f"{line}\n" for line in lines))
