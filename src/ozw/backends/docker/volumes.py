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

import contextlib
import io
import os
import secrets
import subprocess
import tarfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import anyio
import anyio.abc

from ozw.backends.docker.container import (
    LABEL_IMAGE,
    LABEL_ROLE,
    LABEL_WORKER,
    ROLE_FILL,
    docker_error,
)
from ozw.backends.docker.references import volume_name
from ozw.failures import FailureReason, TaskFailure
from ozw.logs import TaskLog

if TYPE_CHECKING:
    from ozw.backends.docker.backend import DockerBackend, LocalImage

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
    """The sidecar volumes of one :class:`DockerBackend`, filled once and reused.

    Every ``docker`` call goes through the backend, and every helper container is
    tracked there while it exists.
    """

    def __init__(self, backend: DockerBackend) -> None:
        self.backend = backend
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

    async def prepare_sidecar_volume(self, image: LocalImage, log: TaskLog) -> str:
        """The shared filled volume of a sidecar image, filled once and reused.

        Mounted read-only only. Raises SIDECAR_PREP. One lock per volume name:
        concurrent tasks wanting the same sidecar wait for the first one's fill and
        then reuse it.
        """
        volume = volume_name(image.reference, image.image_id)
        async with self._lock_for(volume):
            if volume in self._ready_volumes:
                # Cheap re-check: `docker volume prune` may have removed it meanwhile, and
                # `docker create` would then mount a new, empty volume without a word.
                with self.backend.bounded(FailureReason.SIDECAR_PREP, f"inspecting {volume}"):
                    found = await self.backend.docker_cli("volume", "inspect", volume)
                if found.ok:
                    log.info("reusing sidecar volume %s", volume)
                    return volume
                self._ready_volumes.discard(volume)
            await self._fill_volume(volume, image, log, private_labels=None)
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
        self.backend.track(name)
        helpers.append(name)
        with self.backend.bounded(FailureReason.SIDECAR_PREP, "creating a fill container"):
            result = await self.backend.docker_cli(
                "create",
                f"--name={name}",
                f"--label={LABEL_WORKER}={self.backend.worker_id}",
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
    ) -> None:
        """Fill ``volume`` from ``image`` (shared: reuse it when its marker is there)."""
        backend = self.backend
        private = private_labels is not None
        kind = "read-write sidecar volume" if private else "sidecar volume"
        existed = False
        if not private:
            with backend.bounded(FailureReason.SIDECAR_PREP, f"inspecting {volume}"):
                existed = (await backend.docker_cli("volume", "inspect", volume)).ok
        helpers: list[str] = []
        filled = False
        try:
            if not existed:
                with backend.bounded(FailureReason.SIDECAR_PREP, f"creating {volume}"):
                    created = await backend.docker_cli(
                        "volume",
                        "create",
                        f"--label={LABEL_IMAGE}={image.reference}",
                        f"--label=ozw.image_id={image.image_id}",
                        *(private_labels or ()),
                        volume,
                    )
                if not created.ok:
                    raise TaskFailure(
                        FailureReason.SIDECAR_PREP,
                        f"could not create {kind} {volume}: {created.error}",
                    )
            target = await self._create_helper(
                image.image_id, helpers, f"--volume={volume}:{FILL_MOUNT}:nocopy"
            )
            if existed:
                with backend.bounded(FailureReason.SIDECAR_PREP, f"probing {volume}"):
                    probe = await backend.docker_cli(
                        "cp", f"{target}:{FILL_MOUNT}/{FILLED_MARKER}", "-"
                    )
                if probe.ok:
                    log.info("reusing sidecar volume %s", volume)
                    filled = True
                    return
                log.warning("sidecar volume %s was never completely filled; filling it", volume)
            log.info("filling %s %s from %s", kind, volume, image.reference)
            started = time.monotonic()
            source = await self._create_helper(image.image_id, helpers)
            with backend.bounded(
                FailureReason.SIDECAR_PREP, f"copying {image.reference} into {volume}", long=True
            ):
                await self._stream_export(source, f"{target}:{FILL_MOUNT}", volume)
            with backend.bounded(FailureReason.SIDECAR_PREP, f"marking {volume}"):
                marked = await backend.docker_cli(
                    "cp", "-", f"{target}:{FILL_MOUNT}", input=marker_tar(image.image_id)
                )
            if not marked.ok:
                raise TaskFailure(
                    FailureReason.SIDECAR_PREP,
                    f"could not mark {kind} {volume} as filled: {marked.error}",
                )
            if not private:
                self.fills += 1
            filled = True
            log.info("filled %s %s in %.1fs", kind, volume, time.monotonic() - started)
        finally:
            with anyio.CancelScope(shield=True):
                if helpers:
                    await backend._cleanup_call("rm", "--force", *helpers)
                    for helper in helpers:
                        backend.untrack(helper)
                if not filled:
                    # Never leave a half-filled volume behind under its final name.
                    removed = await backend._cleanup_call("volume", "rm", "--force", volume)
                    if removed is None or not removed.ok:
                        log.warning("could not remove half-filled %s %s", kind, volume)

    async def _stream_export(self, source: str, destination: str, volume: str) -> None:
        """``docker export <source> | docker cp - <destination>``, through an OS pipe."""
        read_fd, write_fd = os.pipe()
        processes: list[anyio.abc.Process] = []
        try:
            processes.append(
                await anyio.open_process(
                    [self.backend.docker, "export", source],
                    stdin=subprocess.DEVNULL,
                    stdout=write_fd,
                    stderr=subprocess.PIPE,
                    env=self.backend.environ,
                    start_new_session=True,
                )
            )
            processes.append(
                await anyio.open_process(
                    [self.backend.docker, "cp", "-", destination],
                    stdin=read_fd,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=self.backend.environ,
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
