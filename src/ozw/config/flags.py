"""The configuration flags, listed once: the table builds the argparse group, the
typed :class:`CliOverrides` and the application of each flag to the file's tables.

Flags are written into the raw TOML tables *before* structuring, so a value is
checked by the same rule whether it came from the file or a flag, and an error
names the flag that gave it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final, Literal

import attrs

from ozw.config.converter import CONVERTER
from ozw.config.model import (
    API_KEY_ENV,
    BACKEND_NAMES,
    BackendName,
    WorkerConfig,
    parse_env_flag,
)


@attrs.frozen
class Flag:
    """One configuration flag and the key it sets.

    ``key`` is dotted; a leading ``backend.`` means the active backend's table. An
    ``append`` flag extends the array at ``key``; a ``store_true`` flag sets ``value``.
    """

    names: tuple[str, ...]
    dest: str
    help: str
    key: str | None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    type: Callable[[str], Any] = str
    nargs: Literal["?"] | None = None
    """``"?"``: the value may be left out (then it is ``const``), as in ``--cleanup``."""
    const: object = None
    action: Literal["store", "append", "store_true"] = "store"
    value: object = None
    item: Callable[[str], object] = str
    """For ``append``: what one given item becomes in the array."""
    only: tuple[BackendName, str] | None = None
    """The one backend that has the key, and what it does (a warning otherwise: Go
    ignores the flag on another backend)."""
    zero_unset: bool = False
    """``0`` counts as not given (Go: ``--max-concurrent-tasks 0`` leaves the file's value)."""
    split: bool = False
    """Each value is a comma-separated list (``\\,`` keeps a comma), as Go's kong reads it."""

    @property
    def label(self) -> str:
        """The name errors use: the first long name."""
        return next(name for name in self.names if name.startswith("--"))


def _log_level(text: str) -> str:
    return "warning" if text == "warn" else text  # Go's spelling, kept for its scripts


def _boolean(text: str) -> bool:
    word = text.lower()
    if word not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return word == "true"


def _env_item(text: str) -> dict[str, str | None]:
    entry = parse_env_flag(text)
    item: dict[str, str | None] = {"name": entry.name}
    return item if entry.value is None else {**item, "value": entry.value}


def split_items(text: str) -> list[str]:
    """``a,b\\,c`` → ``["a", "b,c"]``: how the Go worker's kong splits a repeatable flag."""
    items, current, escaped = [], "", False
    for char in text:
        if escaped:
            current += char if char == "," else "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            items.append(current)
            current = ""
        else:
            current += char
    current += "\\" if escaped else ""
    return [*items, current] if current else items


# Go's flag names (kong derives them from main.go's fields) are all here; a string
# flag given as "" counts as not given, as in Go.
FLAGS: Final[tuple[Flag, ...]] = (
    Flag(("--backend",), "backend", f"backend to run tasks with ({', '.join(BACKEND_NAMES)})",
         "backend", metavar="NAME"),
    Flag(("--worker-id",), "worker_id", "this worker's id (required; not starting with 'warp')",
         "worker_id", metavar="ID"),
    Flag(("--api-key",), "api_key", f"Oz API key (default: ${API_KEY_ENV})", None, metavar="KEY"),
    Flag(("--websocket-url", "--web-socket-url"), "websocket_url",
         "dispatch server WebSocket URL (ws:// or wss://)",
         "server.websocket_url", metavar="URL"),
    Flag(("--server-root-url",), "server_root_url", "Oz server root URL (http:// or https://)",
         "server.root_url", metavar="URL"),
    Flag(("--proxy-url",), "proxy_url", "proxy to reach the server through (http, https, socks5)",
         "server.proxy_url", metavar="URL"),
    Flag(("--session-sharing-server-url",), "session_sharing_server_url",
         "session sharing server URL passed to the agent", "server.session_sharing_server_url",
         metavar="URL"),
    Flag(("--log-level",), "log_level", "log verbosity (warn = warning)", "log_level",
         choices=("debug", "info", "warning", "error"), type=_log_level),
    Flag(("--log-format",), "log_format", "log line format", "log_format",
         choices=("human", "json")),
    Flag(("--cleanup",), "cleanup", "remove containers / workspaces after tasks (--cleanup=false "
         "keeps them)", "cleanup", metavar="true|false", type=_boolean, nargs="?", const=True),
    # Go's kong also takes --no-cleanup=true|false (false: not given).
    Flag(("--no-cleanup",), "no_cleanup", "keep containers / workspaces after tasks (debugging)",
         "cleanup", action="store_true", value=False, type=_boolean, nargs="?", const=True),
    Flag(("-v", "--volume", "--volumes"), "volumes",
         "extra bind for task containers (docker; repeatable)",
         "backend.volumes", metavar="SRC:DST[:ro]", action="append",
         only=("docker", "mounts volumes"), split=True),
    Flag(("-e", "--env"), "env",
         "task variable: KEY inherits the worker's, KEY=VALUE sets (repeatable)",
         "backend.environment", metavar="KEY[=VALUE]", action="append", item=_env_item,
         split=True),
    Flag(("--max-concurrent-tasks",), "max_concurrent_tasks",
         "tasks run at once (0: the file's value, else unlimited)",
         "max_concurrent_tasks", metavar="N", type=int, zero_unset=True),
    Flag(("--idle-on-complete",), "idle_on_complete", "how long the agent idles after finishing",
         "idle_on_complete", metavar="DURATION"),
    Flag(("--target-dir",), "target_dir", "run every task in this directory (direct)",
         "backend.target_dir", metavar="DIR", only=("direct", "has one")),
    Flag(("--task-timeout",), "task_timeout", "fail tasks running longer (e.g. 2h)",
         "task_timeout", metavar="DURATION"),
    Flag(("--shutdown-grace",), "shutdown_grace", "on Ctrl-C / SIGTERM, time for teardown",
         "shutdown_grace", metavar="DURATION"),
    Flag(("--metrics-addr",), "metrics_addr", "serve /metrics and /healthz here",
         "metrics_addr", metavar="HOST:PORT"),
    Flag(("--max-tasks",), "max_tasks", "exit after N tasks finished (one-shot workers)",
         "max_tasks", metavar="N", type=int),
    Flag(("--once",), "once", "exit after one task (same as --max-tasks 1)", "max_tasks",
         action="store_true", value=1),
)  # fmt: skip


def _strings(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(items)


@attrs.frozen
class CliOverrides:
    """Values given on the command line; ``None`` / empty / False means "not given".

    Values stay as typed (strings for durations and ``KEY[=VALUE]`` for ``env``) so
    that loading checks them with the same rules as the file and can name the flag
    in its error. The fields mirror :data:`FLAGS` (a test holds them together).
    """

    backend: str | None = None
    worker_id: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    websocket_url: str | None = None
    server_root_url: str | None = None
    proxy_url: str | None = attrs.field(default=None, repr=False)
    session_sharing_server_url: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    cleanup: bool | None = None
    no_cleanup: bool = False
    volumes: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    env: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    max_concurrent_tasks: int | None = None
    idle_on_complete: str | None = None
    target_dir: str | None = None
    task_timeout: str | None = None
    shutdown_grace: str | None = None
    metrics_addr: str | None = None
    max_tasks: int | None = None
    once: bool = False


def add_config_flags(
    parser: argparse.ArgumentParser, *, without: Collection[str] = frozenset()
) -> None:
    """The configuration group of ``parser``: ``--config`` and the flags of the table.

    ``without`` names (by ``dest``) the flags a command has no use for: its help
    lists only what it reads.
    """
    group = parser.add_argument_group("configuration (flags override the file)")
    group.add_argument(
        "--config",
        "--config-file",
        dest="config",
        metavar="FILE",
        help="config file: ozw's TOML, or the Go worker's YAML (*.yaml, *.yml) as it is",
    )
    defaults = CONVERTER.unstructure(WorkerConfig(worker_id="-"))
    for flag in FLAGS:
        if flag.dest in without:
            continue
        default = _default_text(flag, defaults)
        shown = flag.help if default is None else f"{flag.help} (default: {default})"
        options: dict[str, Any] = {"dest": flag.dest, "help": shown}
        if flag.action == "store_true" and flag.nargs is None:
            options["action"] = "store_true"
        elif flag.action == "store_true":  # a switch that also takes =true / =false
            options |= {"nargs": "?", "const": True, "type": flag.type, "metavar": "true|false"}
        else:
            options |= {"metavar": flag.metavar, "choices": flag.choices, "type": flag.type}
            if flag.nargs is not None:
                options |= {"nargs": flag.nargs, "const": flag.const}
        if flag.action == "append":
            options |= {"action": "append", "default": []}
        group.add_argument(*flag.names, **options)


def _default_text(flag: Flag, defaults: dict[str, Any]) -> str | None:
    """The model's default for the key ``flag`` sets, as the file writes it (None: none)."""
    if flag.key is None or flag.action != "store" or flag.key == "worker_id":
        return None
    if flag.key == "backend":
        return "docker"
    *parents, key = flag.key.replace("backend.", "backend.docker.").split(".")
    table = defaults
    for part in parents:
        table = table.get(part, {})
    value = table.get(key)
    if value in (None, "", []):
        return None
    return str(value).lower() if isinstance(value, bool) else str(value)


def overrides_from_args(args: argparse.Namespace) -> CliOverrides:
    """The configuration flags of parsed ``args`` as :class:`CliOverrides`.

    A flag the command does not offer counts as not given.
    """
    given_values = {
        flag.dest: getattr(args, flag.dest) for flag in FLAGS if hasattr(args, flag.dest)
    }
    return CliOverrides(**given_values)


def given(overrides: CliOverrides) -> list[tuple[Flag, Any]]:
    """The flags ``overrides`` gives, each with its value, in the table's order."""
    values: Mapping[str, Any] = attrs.asdict(overrides, recurse=False)
    return [(flag, values[flag.dest]) for flag in FLAGS if _is_given(flag, values[flag.dest])]


def _is_given(flag: Flag, value: object) -> bool:
    match flag.action:
        case "store_true":
            return value is True
        case "append":
            return value != ()
    if flag.zero_unset and value == 0:
        return False
    return value is not None and value != ""  # 0 and False are values given
