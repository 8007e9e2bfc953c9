"""Sidecar volumes: each sidecar image's filesystem copied once into a named volume.

A volume is filled through two helper containers that are created but never started:
``docker export <source> | docker cp - <target>:/ozw-fill`` through an OS pipe, then
the marker is copied in.

Choices where the contract is silent:

- A filled volume holds a marker file ``/.ozw-sidecar-filled`` (the image ID) at its
  root, written last; a volume without it is refilled in place (same digest, same
  content) before use. Tasks therefore see ``<mount>/.ozw-sidecar-filled``.
- Sidecar volumes are kept across tasks and restarts (that is the point of them),
  and only ever mounted read-only. A ``read_write`` sidecar gets a volume of its own
  for its task, ``<shared name>-rw-<random suffix of the task's container>``
  (:func:`~ozw.backends.docker.references.private_volume_name`), filled from the
  image the same way and removed in teardown with the container (kept, like the
  container, when cleanup is off). Otherwise one task could rewrite
  ``/agent/entrypoint.sh`` for every later task, or leave data for the next. Private
  volumes are labelled with the worker and task id and the role ``sidecar-rw``, so
  the start-up reaper finds those a crashed run left behind.
- Every helper container is registered for removal *before* its ``docker create``
  runs: a cancellation mid-create must not leave it behind (``rm -f`` of a name that
  was never created is harmless).
- Short calls (inspect, create, ``cp`` of the marker) are bounded by the backend's
  ``call_timeout``, the export stream by its ``transfer_timeout``; either turns into
  ``sidecar_prep``.
"""

from __future__ import annotations

import io
import secrets
import tarfile
import time
import urllib.parse
from collections.abc import Sequence
from typing import Final

import anyio

from ozw.backends.docker.cli import DockerCLI
from ozw.backends.docker.engine_api import (
    NOT_FOUND,
    EngineConnection,
    answer_on,
)
from ozw.backends.docker.inspect import LocalImage
from ozw.backends.docker.references import volume_name
from ozw.backends.docker.rules import LABEL_IMAGE, LABEL_ROLE, LABEL_WORKER, ROLE_FILL
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.telemetry.logs import TaskLog

FILL_MOUNT: Final = "/ozw-fill"
"""Where a fill container mounts the sidecar volume (a path no image is expected to have)."""
FILL_COMMAND: Final = "ozw-fill"
"""Command of helper containers, which are created but never started (an image without
``CMD`` cannot be created without one)."""
FILLED_MARKER: Final = ".ozw-sidecar-filled"


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


class SidecarVolumes:
    """The sidecar volumes of one backend, filled once and reused.

    Every helper container is tracked by ``cli`` while it exists.
    """

    def __init__(self, cli: DockerCLI, worker_id: str) -> None:
        self.cli = cli
        self.worker_id = worker_id
        self._volume_locks: dict[str, anyio.Lock] = {}
        self._ready_volumes: set[str] = set()
        self.fills = 0
        """How many shared sidecar volumes this backend filled (tests and metrics read
        it); private read-write copies are not counted."""

    def _lock_for(self, volume: str) -> anyio.Lock:
        lock = self._volume_locks.get(volume)
        if lock is None:
            lock = self._volume_locks[volume] = anyio.Lock()
        return lock

    async def _exists(self, volume: str, engine: EngineConnection | None = None) -> bool:
        """Whether ``volume`` exists: asked on ``engine`` when given, else (or when it
        gives no clear answer) with ``docker volume inspect``."""
        with self.cli.bounded(FailureReason.SIDECAR_PREP, f"inspecting {volume}"):
            answer = await answer_on(engine, "GET", f"/volumes/{urllib.parse.quote(volume)}")
            if answer is not None and (answer.ok or answer.status == NOT_FOUND):
                return answer.ok
            return (await self.cli.run("volume", "inspect", volume)).ok

    async def prepare_sidecar_volume(
        self, image: LocalImage, log: TaskLog, engine: EngineConnection | None = None
    ) -> str:
        """The shared filled volume of a sidecar image, filled once and reused.

        Mounted read-only only. Raises SIDECAR_PREP. One lock per volume name:
        concurrent tasks wanting the same sidecar wait for the first one's fill and
        then reuse it. ``engine`` (the task's connection) answers the per-task check
        that a known volume still exists, without a CLI process of its own.
        """
        volume = volume_name(image.reference, image.content_digest)
        async with self._lock_for(volume):
            if volume in self._ready_volumes:
                # Cheap re-check: `docker volume prune` may have removed it meanwhile, and
                # `docker create` would then mount a new, empty volume without a word.
                if await self._exists(volume, engine):
                    log.info("reusing sidecar volume %s", volume)
                    return volume
                self._ready_volumes.discard(volume)
            if await self._fill_volume(volume, image, log, private_labels=None):
                self.fills += 1
            self._ready_volumes.add(volume)
        return volume

    async def prepare_private_volume(
        self, volume: str, image: LocalImage, log: TaskLog, *, labels: Sequence[str]
    ) -> None:
        """Create ``volume`` and fill it from ``image`` for one task (a read-write sidecar).

        ``labels`` (``--label=...`` arguments) name the worker, task and role. The
        caller registers ``volume`` for removal before calling: a cancellation may
        leave it created. Raises SIDECAR_PREP; a failed fill removes the volume.
        """
        await self._fill_volume(volume, image, log, private_labels=labels)

    async def _create_helper(self, image_id: str, helpers: list[str], *options: str) -> str:
        """Create a helper container, registered in ``helpers`` (removed by the caller)."""
        name = f"ozw-fill-{secrets.token_hex(6)}"
        # Registered before the call: a cancellation mid-create must not leave it.
        self.cli.track(name)
        helpers.append(name)
        with self.cli.bounded(FailureReason.SIDECAR_PREP, "creating a fill container"):
            result = await self.cli.run(
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

    async def _fill_volume(
        self,
        volume: str,
        image: LocalImage,
        log: TaskLog,
        *,
        private_labels: Sequence[str] | None,
    ) -> bool:
        """Fill ``volume`` from ``image``; False when a shared one was filled already.

        A half-filled or failed volume is removed: never left under its final name.
        """
        private = private_labels is not None
        kind = "read-write sidecar volume" if private else "sidecar volume"
        existed = not private and await self._exists(volume)
        helpers: list[str] = []
        filled = False
        try:
            if not existed:
                await self._create_volume(volume, image, kind, private_labels or ())
            target = await self._create_helper(
                image.image_id, helpers, f"--volume={volume}:{FILL_MOUNT}:nocopy"
            )
            if existed:
                if await self._has_marker(target, volume):
                    log.info("reusing sidecar volume %s", volume)
                    filled = True
                    return False
                log.warning("sidecar volume %s was never completely filled; filling it", volume)
            log.info("filling %s %s from %s", kind, volume, image.reference)
            started = time.monotonic()
            await self._copy_image(image, helpers, target, volume, kind)
            filled = True
            log.info("filled %s %s in %.1fs", kind, volume, time.monotonic() - started)
            return True
        finally:
            with anyio.CancelScope(shield=True):
                await self._discard(helpers, None if filled else volume, kind, log)

    async def _create_volume(
        self, volume: str, image: LocalImage, kind: str, labels: Sequence[str]
    ) -> None:
        with self.cli.bounded(FailureReason.SIDECAR_PREP, f"creating {volume}"):
            created = await self.cli.run(
                "volume",
                "create",
                f"--label={LABEL_IMAGE}={image.reference}",
                f"--label=ozw.image_id={image.image_id}",
                *labels,
                volume,
            )
        if not created.ok:
            raise TaskFailure(
                FailureReason.SIDECAR_PREP, f"could not create {kind} {volume}: {created.error}"
            )

    async def _has_marker(self, target: str, volume: str) -> bool:
        """Whether the volume mounted in ``target`` holds the filled marker."""
        with self.cli.bounded(FailureReason.SIDECAR_PREP, f"probing {volume}"):
            probe = await self.cli.run("cp", f"{target}:{FILL_MOUNT}/{FILLED_MARKER}", "-")
        return probe.ok

    async def _copy_image(
        self, image: LocalImage, helpers: list[str], target: str, volume: str, kind: str
    ) -> None:
        """``docker export <source> | docker cp - <target>``, then the marker, last."""
        source = await self._create_helper(image.image_id, helpers)
        with self.cli.bounded(
            FailureReason.SIDECAR_PREP, f"copying {image.reference} into {volume}", long=True
        ):
            results = await self.cli.stream(
                ["export", source], ["cp", "-", f"{target}:{FILL_MOUNT}"]
            )
        for result, step in zip(results, ("export", "cp"), strict=True):
            if not result.ok:
                raise TaskFailure(
                    FailureReason.SIDECAR_PREP,
                    f"could not fill sidecar volume {volume} (docker {step}): {result.error}",
                )
        with self.cli.bounded(FailureReason.SIDECAR_PREP, f"marking {volume}"):
            marked = await self.cli.run(
                "cp", "-", f"{target}:{FILL_MOUNT}", input=marker_tar(image.image_id)
            )
        if not marked.ok:
            raise TaskFailure(
                FailureReason.SIDECAR_PREP,
                f"could not mark {kind} {volume} as filled: {marked.error}",
            )

    async def _discard(
        self, helpers: list[str], unfilled: str | None, kind: str, log: TaskLog
    ) -> None:
        """Remove the helper containers, and ``unfilled`` (a volume left half-filled)."""
        if helpers:
            await self.cli.cleanup("rm", "--force", *helpers)
            for helper in helpers:
                self.cli.untrack(helper)
        if unfilled is not None:
            removed = await self.cli.cleanup("volume", "rm", "--force", unfilled)
            if removed is None or not removed.ok:
                log.warning("could not remove half-filled %s %s", kind, unfilled)
