"""What ``docker ... inspect --format '{{json ...}}'`` and ``docker version`` print, parsed.

python-on-whales' typed (pydantic) models read the JSON; its client is not used (its
calls block and cannot be cancelled: the CLI runs through
:class:`~ozw.backends.docker.cli.DockerCLI`). Each parser returns the few facts a
decision needs, as a small frozen value, and raises :class:`ValueError` on output that
is not what the engine prints.
"""

from __future__ import annotations

import datetime
import json
from typing import TypeVar

import attrs
import pydantic
from python_on_whales.components.container.models import ContainerState as _StateModel
from python_on_whales.components.image.models import ImageInspectResult
from python_on_whales.docker_client import Version

from ozw.backends.docker.references import platform_of

JSON_FORMAT = "--format={{json .}}"
"""The ``docker version`` / ``image inspect`` format the parsers here read."""
STATE_FORMAT = "--format={{json .State}}"
"""The ``docker container inspect`` format :func:`parse_state` reads."""

_Model = TypeVar("_Model", bound=pydantic.BaseModel)


@attrs.frozen
class LocalImage:
    """An image present on the daemon."""

    reference: str
    image_id: str
    platform: str
    repo_digests: tuple[str, ...] = ()
    """``repo@sha256:...`` entries: the registry digests the image is known by."""

    @property
    def content_digest(self) -> str:
        """What names its sidecar volume, as the Go worker does: the digest of its first
        repo digest, else its image ID (an image built or imported here has no repo
        digest)."""
        if self.repo_digests:
            _, at, digest = self.repo_digests[0].partition("@")
            if at:
                return digest
        return self.image_id


@attrs.frozen
class Daemon:
    """What ``docker version`` says about the daemon."""

    platform: str
    version: str


@attrs.frozen
class ContainerState:
    """The part of ``docker inspect``'s ``State`` that decides a task's outcome."""

    status: str
    running: bool
    exit_code: int
    oom_killed: bool
    error: str
    started: bool
    started_at: datetime.datetime | None = None
    """When it started (the engine's clock), None when it never did."""


def _validated(model: type[_Model], raw: bytes | str, what: str) -> _Model:
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise ValueError(f"unexpected {what} output: {exc.error_count()} problem(s)") from None


def parse_image(reference: str, raw: bytes | str) -> LocalImage:
    """``docker image inspect --format '{{json .}}' <reference>``."""
    info = _validated(ImageInspectResult, raw, "docker image inspect")
    if not info.id:
        raise ValueError("unexpected docker image inspect output: no Id")
    return LocalImage(
        reference,
        info.id,
        platform_of(info.os or "", info.architecture or ""),
        tuple(info.repo_digests or ()),
    )


def parse_daemon(raw: bytes | str) -> Daemon:
    """``docker version --format '{{json .}}'`` (the server part)."""
    server = _validated(Version, raw, "docker version").server
    if server is None:
        raise ValueError("docker version printed no server part")
    return Daemon(platform_of(server.os or "", server.arch or ""), server.version or "")


def _ever_started(started_at: datetime.datetime | None) -> bool:
    # The engine prints Go's zero time (year 1) for a container that never started.
    return started_at is not None and started_at.year > 1


def parse_state(raw: bytes | str) -> ContainerState:
    """``docker container inspect --format '{{json .State}}'``."""
    return _container_state(_validated(_StateModel, raw, "docker container inspect"))


def parse_container_state(raw: bytes | str) -> ContainerState:
    """The state in the engine API's answer to ``GET /containers/{name}/json``."""
    try:
        state = json.loads(raw).get("State")
    except (ValueError, AttributeError):
        state = None
    if not isinstance(state, dict):
        raise ValueError("unexpected container inspect answer: no State")
    try:
        model = _StateModel.model_validate(state)
    except pydantic.ValidationError as exc:
        raise ValueError(f"unexpected container state: {exc.error_count()} problem(s)") from None
    return _container_state(model)


def _container_state(state: _StateModel) -> ContainerState:
    return ContainerState(
        status=state.status or "",
        running=bool(state.running),
        exit_code=state.exit_code if state.exit_code is not None else -1,
        oom_killed=bool(state.oom_killed),
        error=state.error or "",
        started=_ever_started(state.started_at),
        started_at=state.started_at if _ever_started(state.started_at) else None,
    )
