"""Task parameters: the backend-neutral value the worker builds from an assignment.

PROTOCOL.md 4 is the rulebook. Backends never read the raw assignment; they get a
:class:`TaskParams`. Everything here is a pure function so each rule can be tested
exhaustively without I/O.
"""

from __future__ import annotations

from typing import Any

import attrs

from ozw.protocol import InstanceShape

DEFAULT_IMAGE = "ubuntu:22.04"
AGENT_SIDECAR_MOUNT = "/agent"


@attrs.frozen
class Sidecar:
    """An image whose filesystem is mounted into the task at ``mount_path``."""

    image: str
    mount_path: str
    read_write: bool = False


@attrs.frozen
class ParamSettings:
    """The worker settings that shape task parameters."""

    server_root_url: str | None
    default_image: str | None = None
    idle_on_complete: str | None = None
    session_sharing_server_url: str | None = None


@attrs.frozen
class TaskParams:
    """Everything a backend needs to run one task (PROTOCOL.md 4).

    ``env`` is ordered and already merged (later entries of the same name won);
    backends add their own configured ``environment`` on top.
    """

    task_id: str
    run_id: str
    execution_id: str | None
    env: dict[str, str]
    image: str
    sidecars: tuple[Sidecar, ...]
    base_args: tuple[str, ...]
    harness: str | None
    environment_id: str | None
    server_root_url: str | None
    task: dict[str, Any] = attrs.field(repr=False)
    instance_shape: InstanceShape | None = None
    image_defaulted: bool = False
