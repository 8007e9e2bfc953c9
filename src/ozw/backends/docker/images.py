"""Task and sidecar images: inspected, pulled per ``pull_policy``, platform-checked.

A pull failure or a platform mismatch is ``image_pull``, for sidecar images too.
Every inspection is bounded by ``call_timeout``, a pull by ``transfer_timeout``; a
timeout is ``image_pull``.

Under ``if-not-present`` and ``never`` an image, once found and platform-checked, is
remembered by reference for the worker's life (no inspection per task): those
policies use what is present and never look for a newer one anyway. A task whose
setup or create fails makes the backend forget its images, so the next task looks
again (an image removed meanwhile is then pulled or refused as usual). ``always``
pulls and inspects for every task.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from ozw.backends.docker.cli import CallResult, DockerCLI
from ozw.backends.docker.engine_api import NOT_FOUND, EngineConnection, answer_on
from ozw.backends.docker.inspect import JSON_FORMAT, Daemon, LocalImage, parse_daemon, parse_image
from ozw.config import PullPolicy
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.telemetry.logs import TaskLog


async def ask_daemon(cli: DockerCLI) -> Daemon | CallResult:
    """The daemon's platform and version, or the failed ``docker version`` call."""
    result = await cli.run("version", JSON_FORMAT)
    if not result.ok:
        return result
    return parse_daemon(result.stdout)


class Images:
    """The images of one backend's tasks (the daemon's platform is asked once)."""

    def __init__(self, cli: DockerCLI, pull_policy: PullPolicy) -> None:
        self.cli = cli
        self.pull_policy = pull_policy
        self.platform: str | None = None
        """The daemon's ``os/arch``, once known."""
        self._known: dict[str, LocalImage] = {}
        """Images found and platform-checked (``if-not-present`` and ``never`` only)."""

    def forget(self, references: Iterable[str]) -> None:
        """Look these images up again next time (a call involving them failed)."""
        for reference in references:
            self._known.pop(reference, None)

    async def daemon_platform(self) -> str:
        """The daemon's ``os/arch`` (asked once)."""
        if self.platform is None:
            with self.cli.bounded(FailureReason.IMAGE_PULL, "asking the daemon's platform"):
                daemon = await ask_daemon(self.cli)
            if isinstance(daemon, CallResult):
                raise TaskFailure(
                    FailureReason.IMAGE_PULL, f"cannot reach the Docker daemon: {daemon.error}"
                )
            self.platform = daemon.platform
        return self.platform

    async def inspect(
        self, reference: str, engine: EngineConnection | None = None
    ) -> LocalImage | None:
        """The local image ``reference`` names, or None when the daemon has none. Asked
        on ``engine`` (the task's connection) when given, else (or when it gives no clear
        answer) with ``docker image inspect``."""
        with self.cli.bounded(FailureReason.IMAGE_PULL, f"inspecting image {reference}"):
            # A valid reference has no character a request target must escape.
            answer = await answer_on(engine, "GET", f"/images/{reference}/json")
            if answer is not None and answer.ok:
                return parse_image(reference, answer.body)
            if answer is not None and answer.status == NOT_FOUND:
                return None
            result = await self.cli.run("image", "inspect", JSON_FORMAT, reference)
        if not result.ok:
            return None
        return parse_image(reference, result.stdout)

    async def ensure(
        self,
        reference: str,
        log: TaskLog,
        *,
        what: str = "image",
        engine: EngineConnection | None = None,
    ) -> LocalImage:
        """Pull (per ``pull_policy``) and platform-check ``reference``. Raises IMAGE_PULL.

        The pull is the docker CLI's (its credential helpers and contexts); the
        inspections go on ``engine`` when given."""
        policy = self.pull_policy
        if (known := self._known.get(reference)) is not None:
            return known
        image = None if policy == "always" else await self.inspect(reference, engine)
        if image is None:
            if policy == "never":
                raise TaskFailure(
                    FailureReason.IMAGE_PULL,
                    f"{what} {reference} is not present and pull_policy is 'never'",
                )
            await self._pull(reference, log, what)
            image = await self.inspect(reference, engine)
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
        if policy != "always":
            self._known[reference] = image
        return image

    async def _pull(self, reference: str, log: TaskLog, what: str) -> None:
        log.info("pulling %s %s", what, reference)
        started = time.monotonic()
        with self.cli.bounded(FailureReason.IMAGE_PULL, f"pulling {what} {reference}", long=True):
            result = await self.cli.run("pull", "--quiet", reference)
        if not result.ok:
            hint = ""
            if self.pull_policy == "always" and await self.inspect(reference) is not None:
                hint = (
                    f' ({what} {reference} is present locally: pull_policy = "if-not-present" '
                    "in [backend.docker] uses it without pulling)"
                )
            raise TaskFailure(
                FailureReason.IMAGE_PULL,
                f"could not pull {what} {reference}: {result.error}{hint}",
            )
        log.info("pulled %s %s in %.1fs", what, reference, time.monotonic() - started)
