"""The worker's configuration: model, strict converter, flags, loading, starter files.

- :mod:`~ozw.config.model`: the attrs classes, each field with its rule;
- :mod:`~ozw.config.rules`: those rules, as small pure functions;
- :mod:`~ozw.config.converter`: the one strict converter (file ⇄ model);
- :mod:`~ozw.config.flags`: the table of flags (argparse group and overrides);
- :mod:`~ozw.config.loading`: file + flags → model, one-line errors, writing;
- :mod:`~ozw.config.durations`: the project's one duration parser and formatter;
- ``starters/*.toml``: what ``ozw config init`` writes.
"""

from ozw.config.durations import format_duration, parse_duration
from ozw.config.flags import FLAGS, CliOverrides, Flag, add_config_flags, overrides_from_args
from ozw.config.loading import (
    ConfigError,
    dump_config,
    load_config,
    read_config_file,
    starter_config,
)
from ozw.config.model import (
    API_KEY_ENV,
    BACKEND_NAMES,
    DEFAULT_ROOT_URL,
    DEFAULT_WEBSOCKET_URL,
    DEFAULT_WORKSPACE_ROOT,
    BackendConfig,
    BackendName,
    CommandConfig,
    DirectConfig,
    DockerConfig,
    EnvEntry,
    KubernetesConfig,
    LogFormat,
    LogLevel,
    PullPolicy,
    ServerConfig,
    WorkerConfig,
    parse_env_flag,
    resolve_environment,
)
from ozw.config.rules import parse_address, redact_url, url_problem

__all__ = [
    "API_KEY_ENV",
    "BACKEND_NAMES",
    "DEFAULT_ROOT_URL",
    "DEFAULT_WEBSOCKET_URL",
    "DEFAULT_WORKSPACE_ROOT",
    "FLAGS",
    "BackendConfig",
    "BackendName",
    "CliOverrides",
    "CommandConfig",
    "ConfigError",
    "DirectConfig",
    "DockerConfig",
    "EnvEntry",
    "Flag",
    "KubernetesConfig",
    "LogFormat",
    "LogLevel",
    "PullPolicy",
    "ServerConfig",
    "WorkerConfig",
    "add_config_flags",
    "dump_config",
    "format_duration",
    "load_config",
    "overrides_from_args",
    "parse_address",
    "parse_duration",
    "parse_env_flag",
    "read_config_file",
    "redact_url",
    "resolve_environment",
    "starter_config",
    "url_problem",
]
