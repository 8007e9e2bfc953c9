"""Sidecar volumes: each sidecar image's filesystem copied once into a named volume.

A volume is filled through two helper containers that are created but never started:
``docker export <source> | docker cp - <target>:/ozw-fill`` through an OS pipe, then
the marker is copied in.

Choices where the contract is silent:

- A filled volume holds a marker file ``/.ozw-sidecar-filled`` (the image ID) at its
  root, written last; a volume without it is refilled in place (same digest, same
  content) before use. Tasks therefore see ``<mount>/.ozw-sidecar-filled``.
- Sidecar volumes are kept across tasks and restarts (that is the point of them);
  a ``read_write`` sidecar writes into that shared volume, as the protocol's
  volume-per-digest rule implies.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import subprocess
import tarfile
import time
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
        """How many sidecar volumes this backend filled (tests and metrics read it)."""

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
                if (await self.backend.docker_cli("volume", "inspect", volume)).ok:
                    log.info("reusing sidecar volume %s", volume)
                    return volume
                self._ready_volumes.discard(volume)
            await self._fill_volume(volume, image, log)
            self._ready_volumes.add(volume)
        return volume

    async def _create_helper(self, image_id: str, *options: str) -> str:
        name = f"ozw-fill-{secrets.token_hex(6)}"
        self.backend.track(name)
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

    async def _fill_volume(self, volume: str, image: LocalImage, log: TaskLog) -> None:
        existed = (await self.backend.docker_cli("volume", "inspect", volume)).ok
        if not existed:
            created = await self.backend.docker_cli(
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
                probe = await self.backend.docker_cli(
                    "cp", f"{target}:{FILL_MOUNT}/{FILLED_MARKER}", "-"
                )
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
            marked = await self.backend.docker_cli(
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
                    await self.backend._cleanup_call("rm", "--force", *helpers)
                    for helper in helpers:
                        self.backend.untrack(helper)
                if not filled:
                    # Never leave a half-filled volume behind under its final name.
                    removed = await self.backend._cleanup_call("volume", "rm", "--force", volume)
                    if removed is None or not removed.ok:
                        log.warning("could not remove half-filled sidecar volume %s", volume)

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
