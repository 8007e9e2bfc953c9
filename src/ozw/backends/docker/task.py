"""One task in one container: :class:`DockerTaskRun`.

::

    setup    validate the image reference, sidecars and environment (no I/O);
             pull / inspect the image per ``pull_policy``; for each sidecar: pull it
             and fill (or reuse) its shared volume, mounted read-only; a read_write
             sidecar gets a private volume <shared>-rw-<random>, filled for this task;
             docker create
    execute  docker start -a (output relayed into the task log, cancellable); when it
             exits non-zero, docker inspect (exit code, OOMKilled) classifies the end
    teardown (after the result is reported) docker inspect of a container that
             exited 0 (an OOM kill of a child is worth a warning), docker rm -f,
             docker volume rm of private volumes (unless cleanup is off)

Image and container inspections, ``docker create`` and the removal are engine API
requests on a connection through the CLI (:mod:`~ozw.backends.docker.engine_api`):
a task one after another starts the CLI only to pull and for ``docker start``. The
pull stays the CLI's own, for its credential helpers.

A cancelled or lost container is stopped with ``kill_grace`` (killing the CLI does
not stop a container); ``docker wait`` (the agent's own run time) is not bounded:
that is ``task_timeout``'s job.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import secrets
from typing import TYPE_CHECKING

import anyio
import attrs

from ozw.backends.base import ExecuteResult, TaskRun
from ozw.backends.docker.cli import CLEANUP_TIMEOUT, REMOVAL_POLL
from ozw.backends.docker.engine_api import (
    NOT_FOUND,
    EngineConnection,
    EngineUnreachable,
    answer_on,
)
from ozw.backends.docker.gather import gather
from ozw.backends.docker.images import ask_daemon
from ozw.backends.docker.inspect import (
    STATE_FORMAT,
    ContainerState,
    Daemon,
    LocalImage,
    parse_container_state,
    parse_state,
)
from ozw.backends.docker.late_oom import SIGKILL_EXIT, late_oom_possible, oom_logged
from ozw.backends.docker.references import (
    container_name,
    is_valid_reference,
    private_volume_name,
    volume_name,
)
from ozw.backends.docker.rules import (
    LABEL_ROLE,
    LABEL_TASK,
    LABEL_WORKER,
    ROLE_RW,
    ContainerSpec,
    SidecarMount,
    classify_exit,
    create_request,
    duplicate_mount_paths,
    environment_problem,
    memory_bytes,
    sidecar_problem,
)
from ozw.backends.execution import configured_environment, layered_environment
from ozw.backends.execution.limits import cleanup_bound
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.tasks.params import Sidecar, TaskParams
from ozw.telemetry.logs import TaskLog

if TYPE_CHECKING:
    from ozw.backends.docker.backend import DockerBackend


class DockerTaskRun(TaskRun):
    """One task in one container (plus a private volume per ``read_write`` sidecar)."""

    teardown_after_report = True
    """Teardown removes what has ended: the server need not wait for the removal."""

    def __init__(self, backend: DockerBackend, params: TaskParams, log: TaskLog) -> None:
        super().__init__(params, log)
        self.backend = backend
        self.image: LocalImage | None = None
        self.sidecars: list[SidecarMount] = []
        self.env: dict[str, str] = {}
        self.suffix = secrets.token_hex(4)
        """Random suffix of the container's name and of private sidecar volumes."""
        self.container: str | None = None
        self.private_volumes: list[str] = []
        """Private ``read_write`` sidecar volumes, registered before their creation."""
        self.engine: EngineConnection | None = None
        """The task's engine connection, from the start of setup until the container
        is created."""
        self.took_engine = False
        """Set once setup took an engine connection: teardown opens the next spare."""
        self.exited_zero = False
        """The container exited 0 and was not inspected: teardown looks for an OOM kill."""

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
        self.env = layered_environment(
            task=params.env,
            configured=configured_environment(
                self.backend.config.environment, self.backend.environ
            ),
        )
        if (problem := environment_problem(self.env)) is not None:
            raise TaskFailure(FailureReason.CONTAINER_CREATE, problem)

    async def setup(self) -> None:
        """Validate, pull the images, prepare every sidecar volume.

        The images are inspected (pulled) at once, then the volumes prepared at once:
        independent docker calls cost one round trip, not one each. A failure makes
        the backend forget what it knew about this task's images.
        """
        self._validate()
        backend = self.backend
        # Taken first: a new one connects while the images are looked at.
        self.engine = await backend.engines.take()
        self.took_engine = True
        sidecars = self.params.sidecars
        references = [self.params.image, *(sidecar.image for sidecar in sidecars)]
        try:
            ensure = functools.partial(backend.images.ensure, log=self.log, engine=self.engine)
            images = await gather(
                [functools.partial(ensure, self.params.image)]
                + [functools.partial(ensure, s.image, what="sidecar image") for s in sidecars]
            )
            self.image = images[0]
            volumes = await gather(
                [
                    functools.partial(self._sidecar_volume, sidecar, image)
                    for sidecar, image in zip(sidecars, images[1:], strict=True)
                ]
            )
        except TaskFailure:
            backend.images.forget(references)
            raise
        self.sidecars = [
            SidecarMount(volume, sidecar.mount_path, sidecar.read_write)
            for sidecar, volume in zip(sidecars, volumes, strict=True)
        ]
        # Created here, so the log reads "container created" before "agent started".
        name = container_name(backend.worker_id, self.params.task_id, self.suffix)
        self.container = name
        backend.cli.track(name)
        await self._create(name)

    async def _sidecar_volume(self, sidecar: Sidecar, image: LocalImage) -> str:
        if sidecar.read_write:
            return await self._private_volume(image)
        return await self.backend.volumes.prepare_sidecar_volume(image, self.log, self.engine)

    async def _private_volume(self, image: LocalImage) -> str:
        """A volume of this task's own, filled from ``image`` (a ``read_write`` sidecar)."""
        backend = self.backend
        shared = volume_name(image.reference, image.content_digest)
        volume = private_volume_name(shared, self.suffix)
        # Registered first: teardown removes it even if a cancellation hits mid-create.
        self.private_volumes.append(volume)
        backend.cli.track_volume(volume)
        labels = [
            f"--label={LABEL_WORKER}={backend.worker_id}",
            f"--label={LABEL_TASK}={self.params.task_id}",
            f"--label={LABEL_ROLE}={ROLE_RW}",
        ]
        await backend.volumes.prepare_private_volume(volume, image, self.log, labels=labels)
        return volume

    def spec(self, name: str) -> ContainerSpec:
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
            env=self.env,
            sidecars=tuple(self.sidecars),
            volumes=self.backend.config.volumes,
            shape=params.instance_shape,
        )

    async def execute(self) -> ExecuteResult:
        """Start the container (output relayed) and wait for it; classify its end."""
        backend = self.backend
        name = self.container
        assert name is not None, "setup creates the container"
        try:
            return await self._run(name)
        except TaskFailure as failure:
            if failure.reason is FailureReason.CONTAINER_WAIT:
                # We lost track of the container, which may still run: stop it (with
                # cleanup off it is kept, stopped, for debugging).
                self.log.info("stopping container %s", name)
                await backend.cli.stop(name, backend.config.kill_grace, remove=backend.cleanup)
            raise  # otherwise it has ended or never ran: teardown removes it
        except BaseException:
            # Cancelled (or broken): killing the CLI does not stop a container.
            await self._stop(name)
            raise

    async def _stop(self, name: str) -> None:
        """Stop the container with ``kill_grace`` and say when the engine had to kill the
        agent; teardown removes it (cleanup on) after this look at how it ended."""
        backend = self.backend
        grace = backend.config.kill_grace
        self.log.info("stopping container %s", name)
        await backend.cli.stop(name, grace, remove=False)
        inspected = await backend.cli.cleanup("container", "inspect", STATE_FORMAT, name)
        if inspected is None or not inspected.ok:
            return
        state = parse_state(inspected.stdout)
        if state.exit_code == SIGKILL_EXIT and not state.oom_killed:
            self.log.warning("agent did not exit within %gs of SIGTERM (kill_grace): killed", grace)

    async def _create(self, name: str) -> None:
        """``docker create`` as an engine API request: values travel in a pipe only."""
        backend = self.backend
        target, body = create_request(self.spec(name))
        engine, self.engine = self.engine, None
        try:
            if engine is None or not engine.usable:
                if engine is not None:
                    await engine.aclose()
                engine = await EngineConnection.open(backend.cli)
            with backend.cli.bounded(FailureReason.CONTAINER_CREATE, f"creating container {name}"):
                answer = await engine.request("POST", target, body)
        except EngineUnreachable as exc:
            raise TaskFailure(
                FailureReason.CONTAINER_CREATE, f"could not create the container: {exc}"
            ) from None
        finally:
            if engine is not None:
                await backend.engines.give_back(engine)
        if not answer.ok:
            # The image may be gone since it was inspected: look again next time.
            backend.images.forget([self.params.image])
            raise TaskFailure(
                FailureReason.CONTAINER_CREATE, f"could not create the container: {answer.message}"
            )
        self.log.info("container %s created (%s)", name, answer.id[:12])

    async def _run(self, name: str) -> ExecuteResult:
        backend = self.backend
        stderr_tail: collections.deque[str] = collections.deque(maxlen=5)
        code = await backend.cli.runner.run(
            [backend.cli.docker, "start", "--attach", name],
            log=self.log,
            label="agent",
            env=backend.cli.environ,
            stderr_tail=stderr_tail,
        )
        if code == 0:
            # The CLI exits 0 only once the engine has reported exit status 0 (it waits
            # for it): completed, whatever an inspection would add.
            self.exited_zero = True
            if not backend.cleanup:
                backend.cli.untrack(name)
            return ExecuteResult.COMPLETED
        tail = list(stderr_tail)
        state = await self._inspect(name)
        if state is None and not await self._daemon_answers():
            raise TaskFailure(
                FailureReason.CONTAINER_WAIT, "the Docker daemon stopped while the task ran"
            )
        if state is None:
            raise TaskFailure(
                FailureReason.CONTAINER_WAIT,
                f"could not read the container's state (docker start exited with {code}): "
                + (tail[-1] if tail else "no output"),
            )
        if state.running:
            # The CLI lost its attachment while the container runs on: wait for it.
            waited = await backend.cli.run("wait", name)
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
        memory_limit = memory_bytes(shape.memory_gb if shape else None)
        if late_oom_possible(state, memory_limit) and await oom_logged(backend.cli, name, state):
            self.log.info("the engine reported the OOM kill after the container's exit")
            state = attrs.evolve(state, oom_killed=True)
        failure = classify_exit(state, memory_limit)
        if failure is not None:
            raise failure
        self._warn_of_oom(state)
        if not backend.cleanup:
            backend.cli.untrack(name)
        return ExecuteResult.COMPLETED

    def _warn_of_oom(self, state: ContainerState) -> None:
        if state.oom_killed:
            self.log.warning("the engine OOM-killed a process of the container; the agent exited 0")

    async def _daemon_answers(self) -> bool:
        """Whether the daemon answers ``docker version`` (a lost container's first
        question: did the daemon go away?)."""
        backend = self.backend
        with backend.cli.bounded(FailureReason.CONTAINER_WAIT, "asking whether the daemon runs"):
            return isinstance(await ask_daemon(backend.cli), Daemon)

    async def _inspect(self, name: str) -> ContainerState | None:
        backend = self.backend
        with backend.cli.bounded(FailureReason.CONTAINER_WAIT, f"inspecting container {name}"):
            result = await backend.cli.run("container", "inspect", STATE_FORMAT, name)
        if not result.ok:
            return None
        return parse_state(result.stdout)

    async def teardown(self) -> None:
        """Remove the container, then the private sidecar volumes, unless cleanup is off.

        Runs after the result is reported (:attr:`teardown_after_report`); the slot is
        held until it ends."""
        backend = self.backend
        name = self.container
        if self.engine is not None:  # setup ended before the container was created
            await backend.engines.give_back(self.engine)
            self.engine = None
        wanted = name is not None and (self.exited_zero or backend.cleanup)
        engine = await self._teardown_engine() if wanted else None
        try:
            await self._teardown(name, engine)
        finally:
            if engine is not None:
                await backend.engines.give_back(engine)
            if self.took_engine:
                # A spare for the next task, unless this one's was given back.
                await backend.engines.refill()

    async def _teardown_engine(self) -> EngineConnection | None:
        """A connection for the container's last inspection and its removal (None when
        none can start: the CLI then does both)."""
        try:
            with cleanup_bound(CLEANUP_TIMEOUT):
                return await self.backend.engines.take()
        except OSError:
            pass
        return None

    async def _teardown(self, name: str | None, engine: EngineConnection | None) -> None:
        backend = self.backend
        if self.exited_zero and name is not None:
            state = await self._teardown_state(name, engine)
            if state is not None:
                self._warn_of_oom(state)
        if not backend.cleanup:
            if name is not None:
                backend.cli.untrack(name)
                self.log.info("container %s kept (cleanup is off)", name)
            for volume in self.private_volumes:
                backend.cli.untrack_volume(volume)
                self.log.info("read-write sidecar volume %s kept (cleanup is off)", volume)
            return
        problems: list[str] = []
        if name is not None and not await self._remove(name, engine):
            problems.append(f"could not remove container {name}")
            backend.cli.untrack(name)
        for volume in self.private_volumes:
            if not await backend.cli.remove_volume(volume):
                problems.append(f"could not remove read-write sidecar volume {volume}")
                backend.cli.untrack_volume(volume)
        if problems:
            # No longer this task's: the sweep removes them once the daemon answers.
            backend.reaper.note()
            raise RuntimeError("; ".join(problems) + " (retried in the background)")

    async def _teardown_state(
        self, name: str, engine: EngineConnection | None
    ) -> ContainerState | None:
        """The ended container's state, asked on ``engine`` (else the CLI); None when
        neither answers."""
        with cleanup_bound(CLEANUP_TIMEOUT):
            answer = await answer_on(engine, "GET", f"/containers/{name}/json")
            if answer is not None and answer.ok:
                with contextlib.suppress(ValueError):
                    return parse_container_state(answer.body)
            inspected = await self.backend.cli.cleanup("container", "inspect", STATE_FORMAT, name)
            if inspected is not None and inspected.ok:
                return parse_state(inspected.stdout)
        return None

    async def _remove(self, name: str, engine: EngineConnection | None) -> bool:
        """Remove the container (``rm -f``) on ``engine``, else (or when it gives no clear
        answer) with the CLI; True when it is gone."""
        cli = self.backend.cli
        with cleanup_bound(CLEANUP_TIMEOUT):
            target = f"/containers/{name}?force=1"
            while (answer := await answer_on(engine, "DELETE", target)) is not None:
                if answer.ok or answer.status == NOT_FOUND:
                    cli.untrack(name)
                    return True
                if "is already in progress" not in answer.message:
                    break
                # A removal under way elsewhere (kill_all beside this teardown).
                await anyio.sleep(REMOVAL_POLL)
        return await cli.remove_containers(name)
