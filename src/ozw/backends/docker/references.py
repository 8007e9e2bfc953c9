"""Image references and the names the docker backend gives things.

The reference grammar is that of github.com/distribution/reference, checked strictly
before anything reaches a command line. Names of containers and sidecar volumes are
derived from ids and references with every character outside ``[A-Za-z0-9_.-]``
mapped to ``-``.

A sidecar volume is named as the Go worker names it, so a host that ran the Go worker
reuses its volumes: ``<familiar repository name>-<first 12 hex of the digest>``, with
every character outside ``[A-Za-z0-9_.-]`` mapped to ``-``. The familiar name is the
repository without tag and digest, Docker Hub's host and ``library/`` dropped
(``docker.io/library/x`` → ``x``, ``docker.io/a/b`` → ``a-b``, other registries kept:
``127.0.0.1:5000/a/agent:1`` → ``127.0.0.1-5000-a-agent``). The digest is the image's
first repo digest, else its image ID (see ``LocalImage.content_digest``). A
``read_write`` sidecar's private volume appends ``-rw-<suffix>`` to that name.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

MAX_NAME_PART: Final = 48
MAX_VOLUME_REPO: Final = 242
"""Longest repository part of a volume name: with ``-`` and 12 hex it fills the 255
bytes a file name (the volume's directory) may have. The Go worker does not cut,
and fails beyond it."""
DOCKER_HUB: Final = "docker.io"
_HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io"})
_OFFICIAL: Final = "library/"

# --- image references (the grammar of github.com/distribution/reference) -----------

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?", re.ASCII
)
MAX_NAME_LENGTH: Final = 255

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class InvalidReference(ValueError):
    """An image reference that is not valid Docker reference syntax."""


@attrs.frozen
class ImageReference:
    """A parsed image reference: ``name[:tag][@digest]``."""

    name: str
    tag: str | None = None
    digest: str | None = None


def parse_reference(reference: str) -> ImageReference:
    """Parse ``reference`` strictly; raises :class:`InvalidReference`.

    Only references matching the registry grammar pass, so nothing that reaches a
    command line can start with ``-`` or hold whitespace or control characters.
    """
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        raise InvalidReference(f"{reference!r} is not a valid image reference")
    name = match["name"]
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidReference(
            f"{reference!r} is not a valid image reference: "
            f"repository name longer than {MAX_NAME_LENGTH} characters"
        )
    return ImageReference(name, match["tag"], match["digest"])


HUB_REGISTRY: Final = ("registry-1.docker.io", 443)
"""Where the engine pulls Docker Hub images from."""


def registry_address(reference: str) -> tuple[str, int]:
    """The registry a pull of ``reference`` contacts, as (host, port).

    As the engine reads a name: a first component with a ``.`` or ``:``, or
    ``localhost``, is a registry; anything else is on Docker Hub.
    """
    first, slash, _ = parse_reference(reference).name.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return HUB_REGISTRY
    if first in _HUB_ALIASES:
        return HUB_REGISTRY
    host, colon, port = first.rpartition(":")
    return (host, int(port)) if colon and port.isdigit() else (first, 443)


def is_valid_reference(reference: str) -> bool:
    """Whether ``reference`` is a valid image reference (see :func:`parse_reference`)."""
    try:
        parse_reference(reference)
    except InvalidReference:
        return False
    return True


def sanitise_name_part(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_.-]`` mapped to ``-``."""
    return _NAME_CHARS.sub("-", text)


def digest_hex(digest: str) -> str:
    """The hex part of ``algorithm:hex`` (or the whole string when it has no algorithm)."""
    return digest.rpartition(":")[2]


def familiar_name(name: str) -> str:
    """A repository name as ``docker images`` shows it (distribution's FamiliarName).

    The first component is a registry host when it holds ``.`` or ``:``, an upper-case
    letter, or is ``localhost``; Docker Hub's host is dropped, and so is ``library/``
    before a single-component name.
    """
    host, slash, path = name.partition("/")
    if slash and ("." in host or ":" in host or host == "localhost" or host != host.lower()):
        if host not in _HUB_ALIASES:
            return name
        name = path
    return _official(name)


def _official(path: str) -> str:
    """``library/x`` → ``x``; anything else unchanged."""
    rest = path.removeprefix(_OFFICIAL)
    return rest if path.startswith(_OFFICIAL) and "/" not in rest else path


def volume_name(reference: str, digest: str) -> str:
    """The sidecar volume of an image: ``<familiar name mapped>-<first 12 hex of digest>``."""
    repository = familiar_name(parse_reference(reference).name)
    return f"{sanitise_name_part(repository)[:MAX_VOLUME_REPO]}-{digest_hex(digest)[:12]}"


def container_name(worker_id: str, task_id: str, suffix: str) -> str:
    """``ozw-<worker>-<task>-<suffix>``: readable in ``docker ps``, unique by ``suffix``.

    The ``ozw-`` prefix makes the name start with a letter whatever the ids hold.
    """
    worker = sanitise_name_part(worker_id)[:MAX_NAME_PART]
    task = sanitise_name_part(task_id)[:MAX_NAME_PART]
    return f"ozw-{worker}-{task}-{suffix}"


_ARCH_ALIASES: Final = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}


def platform_of(os_name: str, architecture: str) -> str:
    """``os/arch`` in Docker's spelling (``x86_64`` → ``amd64``, ``aarch64`` → ``arm64``)."""
    arch = architecture.strip().lower()
    return f"{os_name.strip().lower()}/{_ARCH_ALIASES.get(arch, arch)}"


def private_volume_name(shared: str, suffix: str) -> str:
    """The volume of one task's ``read_write`` sidecar: ``<shared name>-rw-<suffix>``.

    ``suffix`` is the random suffix of the task's container name, so the two are
    easy to pair in ``docker ps`` and ``docker volume ls``.
    """
    return f"{shared}-rw-{suffix}"
