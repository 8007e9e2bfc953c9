"""The worker's configuration: the TOML model of DESIGN.md as attrs classes.

Loading, validation and CLI overrides live here too (see :func:`load_config`).
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import attrs

DEFAULT_WEBSOCKET_URL: Final = "wss://oz.warp.dev/api/v1/selfhosted/worker/ws"
DEFAULT_ROOT_URL: Final = "https://app.warp.dev"
DEFAULT_WORKSPACE_ROOT: Final = "/var/lib/oz/workspaces"

BackendName: TypeAlias = Literal["docker", "direct", "command"]
PullPolicy: TypeAlias = Literal["always", "if-not-present", "never"]
LogFormat: TypeAlias = Literal["human", "json"]


class ConfigError(Exception):
    """The configuration is wrong; the message is one line naming the key and the problem."""


@attrs.frozen
class EnvEntry:
    """A configured environment variable; no ``value`` means: inherit the worker's own."""

    name: str
    value: str | None = None


@attrs.frozen
class ServerConfig:
    websocket_url: str = DEFAULT_WEBSOCKET_URL
    root_url: str = DEFAULT_ROOT_URL
    session_sharing_server_url: str | None = None


@attrs.frozen
class DockerConfig:
    volumes: tuple[str, ...] = ()
    default_image: str | None = None
    environment: tuple[EnvEntry, ...] = ()
    pull_policy: PullPolicy = "always"
    kill_grace: float = 10.0


@attrs.frozen
class DirectConfig:
    workspace_root: str = DEFAULT_WORKSPACE_ROOT
    oz_path: str | None = None
    target_dir: str | None = None
    setup_command: str | None = None
    teardown_command: str | None = None
    environment: tuple[EnvEntry, ...] = ()
    setup_timeout: float = 600.0
    teardown_timeout: float = 300.0
    kill_grace: float = 10.0


@attrs.frozen
class CommandConfig:
    dispatch_command: str
    cancel_command: str | None = None
    dispatch_timeout: float = 60.0
    environment: tuple[EnvEntry, ...] = ()
    kill_grace: float = 10.0


BackendConfig: TypeAlias = DockerConfig | DirectConfig | CommandConfig


@attrs.frozen
class WorkerConfig:
    """The effective configuration of one worker (file merged with flags).

    ``api_key`` never comes from the file: only ``--api-key`` or ``WARP_API_KEY``.
    Durations are seconds (the file writes them as ``"60s"``, ``"45m"``, ``"1h30m"``).
    """

    worker_id: str
    backend: BackendConfig = attrs.field(factory=DockerConfig)
    server: ServerConfig = attrs.field(factory=ServerConfig)
    max_concurrent_tasks: int = 0
    cleanup: bool = True
    idle_on_complete: str | None = None
    task_timeout: float | None = None
    shutdown_grace: float = 30.0
    log_level: str = "info"
    log_format: LogFormat = "human"
    metrics_addr: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)

    @property
    def backend_name(self) -> BackendName:
        match self.backend:
            case DockerConfig():
                return "docker"
            case DirectConfig():
                return "direct"
            case CommandConfig():
                return "command"
