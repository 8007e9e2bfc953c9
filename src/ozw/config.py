"""The worker's configuration: the TOML model of DESIGN.md as attrs classes.

Loading goes file → raw TOML tables → flags applied to those tables → one strict
cattrs pass into the model. Applying the flags *before* structuring means a value
is checked by the same rule whether it came from the file or a flag, and an error
names where the bad value came from (``config/worker.toml: server.root_url: ...``
or ``--task-timeout: ...``). Every problem becomes one :class:`ConfigError` line.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal, TypeAlias, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

import attrs
import cattrs
import tomli_w
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

DEFAULT_WEBSOCKET_URL: Final = "wss://oz.warp.dev/api/v1/selfhosted/worker/ws"
DEFAULT_ROOT_URL: Final = "https://app.warp.dev"
DEFAULT_WORKSPACE_ROOT: Final = "/var/lib/oz/workspaces"
API_KEY_ENV: Final = "WARP_API_KEY"

BackendName: TypeAlias = Literal["docker", "direct", "command"]
PullPolicy: TypeAlias = Literal["always", "if-not-present", "never"]
LogFormat: TypeAlias = Literal["human", "json"]
LogLevel: TypeAlias = Literal["debug", "info", "warning", "error"]

_T = TypeVar("_T")

BACKEND_NAMES: Final[tuple[BackendName, ...]] = get_args(BackendName)


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

_BACKEND_CLASSES: Final[dict[str, type[BackendConfig]]] = {
    "docker": DockerConfig,
    "direct": DirectConfig,
    "command": CommandConfig,
}


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
    log_level: LogLevel = "info"
    log_format: LogFormat = "human"
    metrics_addr: str | None = None
    max_tasks: int | None = None
    """Exit after this many tasks finished (one-shot and CI workers); None = never."""
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


@attrs.frozen
class CliOverrides:
    """Values given on the command line; ``None`` / empty means "not given".

    Values stay as typed (strings for durations and ``KEY[=VALUE]`` for ``env``) so
    that :func:`load_config` checks them with the same rules as the file and can
    name the flag in its error.
    """

    backend: str | None = None
    worker_id: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    websocket_url: str | None = None
    server_root_url: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    no_cleanup: bool = False
    volumes: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    max_concurrent_tasks: int | None = None
    idle_on_complete: str | None = None
    target_dir: str | None = None
    task_timeout: str | None = None
    shutdown_grace: str | None = None
    metrics_addr: str | None = None
    max_tasks: int | None = None


# --------------------------------------------------------------------------- durations

_DURATION_RE: Final = re.compile(
    r"(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)s)?"
    r"(?:(?P<ms>\d+(?:\.\d+)?)ms)?"
)
_UNIT_SECONDS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_BARE_NUMBER_RE: Final = re.compile(r"\d+(?:\.\d+)?")
_DURATION_HINT: Final = 'use e.g. "500ms", "90s", "45m" or "1h30m"'


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``"500ms"``, ``"90s"``, ``"45m"``, ``"1h30m"``; ``"90"`` = 90 s.

    Units go from largest to smallest, each at most once, so a typo such as
    ``"1m1h"`` is an error rather than a surprise.

    Raises:
        ValueError: ``text`` is not such a duration (the message says why, in one line).
    """
    if _BARE_NUMBER_RE.fullmatch(text):
        return float(text)
    match = _DURATION_RE.fullmatch(text)
    if text == "" or match is None:
        raise ValueError(f"{text!r} is not a duration ({_DURATION_HINT})")
    return sum(
        float(amount) * _UNIT_SECONDS[unit]
        for unit, amount in match.groupdict().items()
        if amount is not None
    )


def format_duration(seconds: float) -> str:
    """The file form of ``seconds`` (to the millisecond): ``"90s"``, ``"45m"``, ``"1h30m"``.

    Values under two minutes stay in seconds because ``"90s"`` reads better than ``"1m30s"``.
    """
    total_ms = round(seconds * 1000)
    if total_ms < 120_000:
        whole, ms = divmod(total_ms, 1000)
        return _join_units([("s", whole), ("ms", ms)])
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, ms = divmod(rest, 1000)
    return _join_units([("h", hours), ("m", minutes), ("s", whole), ("ms", ms)])


def _join_units(parts: list[tuple[str, int]]) -> str:
    text = "".join(f"{amount}{unit}" for unit, amount in parts if amount)
    return text or "0s"


# --------------------------------------------------------------------------- environment


def resolve_environment(entries: Iterable[EnvEntry], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables ``entries`` define: a value sets, no value inherits from ``environ``.

    An inherited name missing from ``environ`` is skipped (not set to ``""``), so the
    agent can tell "unset" from "empty". Later entries of the same name win.
    """
    result: dict[str, str] = {}
    for entry in entries:
        if entry.value is not None:
            result[entry.name] = entry.value
        elif entry.name in environ:
            result[entry.name] = environ[entry.name]
    return result


def parse_env_flag(text: str) -> EnvEntry:
    """``KEY`` (inherit) or ``KEY=VALUE`` (set) from ``-e/--env``; the name is checked later."""
    name, sep, value = text.partition("=")
    return EnvEntry(name, value if sep else None)


# --------------------------------------------------------------------------- value checks
# Each check takes a raw TOML value and returns the model's value or raises _Invalid
# with a problem phrased for people; the caller adds where the value came from.


class _Invalid(ValueError):
    """A value broke a rule; the message is the problem, without the key."""


_TOML_TYPES: Final[dict[type, str]] = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    list: "an array",
    dict: "a table",
}


def _kind(value: object) -> str:
    for cls, name in _TOML_TYPES.items():
        if isinstance(value, cls):
            return name
    return f"a {type(value).__name__}"


def _expect(value: object, cls: type, name: str) -> None:
    # bool is an int in Python; TOML keeps them apart, and so do we.
    if not isinstance(value, cls) or (cls is int and isinstance(value, bool)):
        raise _Invalid(f"expected {name}, got {_kind(value)}")


def _text(value: object) -> str:
    _expect(value, str, "a string")
    assert isinstance(value, str)
    return value


def _optional_text(value: object) -> str | None:
    """A string where ``""`` means "not set" (as in DESIGN.md's ``target_dir = ""``)."""
    return _text(value) or None


def _required_text(value: object) -> str:
    text = _text(value)
    if not text.strip():
        raise _Invalid("must not be empty")
    return text


def _duration(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Invalid(f'expected a duration such as "90s", got {_kind(value)}')
    try:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _Invalid(f"{value!r} is not a duration ({_DURATION_HINT})")
    return seconds


def _positive_duration(value: object) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise _Invalid("must be longer than 0s")
    return seconds


def _duration_text(value: object) -> str:
    """A duration kept as text: ``idle_on_complete`` goes to the agent verbatim."""
    text = _text(value)
    if _BARE_NUMBER_RE.fullmatch(text):
        raise _Invalid(f"{text!r} needs a unit (it is passed to the agent as written: {text}m?)")
    _duration(text)
    return text


def _count(value: object) -> int:
    _expect(value, int, "an integer")
    assert isinstance(value, int)
    if value < 0:
        raise _Invalid(f"must be >= 0 (0 means unlimited), got {value}")
    return value


def _task_limit(value: object) -> int:
    _expect(value, int, "an integer")
    assert isinstance(value, int)
    if value < 1:
        raise _Invalid(f"must be >= 1, got {value}")
    return value


def url_problem(text: str, schemes: tuple[str, ...]) -> str | None:
    """Why ``text`` is not a URL with one of ``schemes`` and a host (None when it is)."""
    wanted = " or ".join(f"{scheme}://" for scheme in schemes)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"must be a {wanted} URL, got {text!r} ({exc})"
    if parts.scheme not in schemes or not parts.hostname:
        return f"must be a {wanted} URL, got {text!r}"
    return None


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:9090`` means all interfaces) → (host, port); ValueError if bad."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'{text!r} is not HOST:PORT (e.g. "127.0.0.1:9090")')
    return host.strip("[]") or "0.0.0.0", int(port)


def _url(schemes: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _text(value)
        problem = url_problem(text, schemes)
        if problem is not None:
            raise _Invalid(problem)
        return text

    return check


def _optional_url(schemes: tuple[str, ...]) -> Callable[[object], str | None]:
    check = _url(schemes)
    return lambda value: check(value) if _text(value) else None


def _address(value: object) -> str | None:
    """``HOST:PORT`` for the metrics endpoint (``:9090`` = all interfaces); ``""`` = off."""
    text = _text(value)
    if text:
        try:
            parse_address(text)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
    return text or None


def _worker_id(value: object) -> str:
    text = _required_text(value)
    # PROTOCOL.md 7. Case-insensitive: "Warp-1" would look just as official.
    if text.lower().startswith("warp"):
        raise _Invalid(f"{text!r} is reserved (ids starting with 'warp' belong to Warp)")
    if any(char.isspace() for char in text):
        raise _Invalid(f"{text!r} must not contain whitespace")
    return text


def _env_name(value: object) -> str:
    name = _text(value)
    if not name:
        raise _Invalid("environment variable name must not be empty")
    if "=" in name or any(char.isspace() for char in name):
        raise _Invalid(f"{name!r} is not a valid environment variable name (no '=' or spaces)")
    return name


_WS: Final = ("ws", "wss")
_HTTP: Final = ("http", "https")

# (class, field) → check, for the fields whose rule is more than their type.
_FIELD_CHECKS: Final[dict[tuple[type, str], Callable[[object], object]]] = {
    (WorkerConfig, "worker_id"): _worker_id,
    (WorkerConfig, "max_concurrent_tasks"): _count,
    (WorkerConfig, "idle_on_complete"): _duration_text,
    (WorkerConfig, "task_timeout"): _positive_duration,
    (WorkerConfig, "shutdown_grace"): _duration,
    (WorkerConfig, "metrics_addr"): _address,
    (WorkerConfig, "max_tasks"): _task_limit,
    (ServerConfig, "websocket_url"): _url(_WS),
    (ServerConfig, "root_url"): _url(_HTTP),
    (ServerConfig, "session_sharing_server_url"): _optional_url(_HTTP),
    (EnvEntry, "name"): _env_name,
    (DockerConfig, "default_image"): _optional_text,
    (DockerConfig, "kill_grace"): _duration,
    (DirectConfig, "workspace_root"): _required_text,
    (DirectConfig, "oz_path"): _optional_text,
    (DirectConfig, "target_dir"): _optional_text,
    (DirectConfig, "setup_command"): _optional_text,
    (DirectConfig, "teardown_command"): _optional_text,
    (DirectConfig, "setup_timeout"): _positive_duration,
    (DirectConfig, "teardown_timeout"): _positive_duration,
    (DirectConfig, "kill_grace"): _duration,
    (CommandConfig, "dispatch_command"): _required_text,
    (CommandConfig, "cancel_command"): _optional_text,
    (CommandConfig, "dispatch_timeout"): _positive_duration,
    (CommandConfig, "kill_grace"): _duration,
}
_DURATION_CHECKS: Final = (_duration, _positive_duration)


def _is_duration(cls: type, name: str) -> bool:
    return _FIELD_CHECKS.get((cls, name)) in _DURATION_CHECKS


# --------------------------------------------------------------------------- converter


def _make_converter() -> cattrs.Converter:
    """A converter that coerces nothing: ``"1"`` is not 1, ``1`` is not ``true``."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for cls in (str, int, bool, float):
        converter.register_structure_hook(cls, _scalar_hook(cls))

    def structure_literal(value: object, type_: Any) -> object:
        allowed = get_args(type_)
        if not isinstance(value, str) or value not in allowed:
            raise _Invalid(f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def is_tuple(type_: Any) -> bool:
        return get_origin(type_) is tuple

    def structure_tuple(value: object, type_: Any) -> tuple[Any, ...]:
        # cattrs would happily iterate a string into characters; TOML wants an array.
        _expect(value, list, "an array")
        assert isinstance(value, list)
        (item_type, *_) = get_args(type_)
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(converter.structure(item, item_type))
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"index {index}", index, item_type))
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {type_!r}", errors, type_)
        return tuple(items)

    def attrs_hook(cls: type) -> Callable[[object, Any], object]:
        overrides = {
            field.name: override(struct_hook=_check_hook(check))
            for field in attrs.fields(cls)
            if (check := _FIELD_CHECKS.get((cls, field.name))) is not None
        }
        if cls is WorkerConfig:
            # The backend table is structured on its own (its shape names the class), and
            # the API key never comes from a file: both keys are unknown at this level.
            overrides |= {"backend": override(omit=True), "api_key": override(omit=True)}
        # mypy cannot tell **overrides from make_dict_structure_fn's keyword flags.
        generated: Callable[[Any, Any], object] = make_dict_structure_fn(
            cls,
            converter,
            **overrides,  # type: ignore[arg-type]
        )

        def structure(value: object, _type: Any) -> object:
            _expect(value, dict, "a table")
            return generated(value, cls)

        return structure

    converter.register_structure_hook_func(_is_literal, structure_literal)
    converter.register_structure_hook_func(is_tuple, structure_tuple)
    converter.register_structure_hook_factory(attrs.has, attrs_hook)
    return converter


def _scalar_hook(cls: type) -> Callable[[object, Any], object]:
    def structure(value: object, _type: Any) -> object:
        _expect(value, cls, _TOML_TYPES[cls])
        if isinstance(value, float) and not math.isfinite(value):
            raise _Invalid(f"must be a finite number, got {value}")
        return value

    return structure


def _check_hook(check: Callable[[object], object]) -> Callable[[object, Any], object]:
    return lambda value, _type: check(value)


def _is_literal(type_: Any) -> bool:
    origin: object = get_origin(type_)
    return origin is Literal


_CONVERTER: Final = _make_converter()


# --------------------------------------------------------------------------- errors


def _problems(exc: BaseException, path: str) -> Iterable[tuple[str, str]]:
    """(dotted key, problem) for each leaf of a cattrs error tree, in file order."""
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            yield from _problems(sub, _join(path, note.name))
        for sub in without:
            yield from _problems(sub, path)
    elif isinstance(exc, IterableValidationError):
        with_index, without = exc.group_exceptions()
        for sub, index_note in with_index:
            yield from _problems(sub, f"{path}[{index_note.index}]")
        for sub in without:
            yield from _problems(sub, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield _join(path, key), _unknown_key(key)
    elif isinstance(exc, KeyError):
        yield path, "required"
    elif isinstance(exc, _Invalid):
        yield path, str(exc)
    else:
        yield path, f"invalid value ({exc})"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key(key: str) -> str:
    if key == "api_key":
        return (
            f"unknown key (the API key is never read from a file: use --api-key or {API_KEY_ENV})"
        )
    return "unknown key"


@attrs.frozen
class _Source:
    """Where values came from, to name the file or the flag in an error."""

    file: str | None
    flags: dict[str, str] = attrs.field(factory=dict)  # dotted key → flag that set it

    def error(self, key: str, problem: str) -> ConfigError:
        """The one-line error for ``problem`` at ``key``, naming the flag or the file."""
        origin = self._flag_key(key)
        if origin is not None:
            flag = self.flags[origin]
            # Only --backend sets a whole table, where the key inside it matters; for
            # a flag's own value (e.g. an -e entry's name) the flag says enough.
            inner = key != origin and origin == "backend"
            return ConfigError(f"{flag}: {key}: {problem}" if inner else f"{flag}: {problem}")
        if self.file is not None:
            return ConfigError(f"{self.file}: {key}: {problem}")
        return ConfigError(f"{key}: {problem}")

    def _flag_key(self, key: str) -> str | None:
        """The most specific key set by a flag that ``key`` lies in, if any."""
        covering = [
            origin
            for origin in self.flags
            if key == origin or key.startswith((origin + ".", origin + "["))
        ]
        return max(covering, key=len, default=None)


# --------------------------------------------------------------------------- loading


def read_toml(path: str) -> dict[str, Any]:
    """The tables in the TOML file at ``path``; any failure is one :class:`ConfigError` line."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8") from None


def load_config(
    path: str | None, overrides: CliOverrides, environ: Mapping[str, str]
) -> WorkerConfig:
    """The effective configuration: the file at ``path`` (if any), then the flags.

    ``environ`` supplies ``WARP_API_KEY`` when ``--api-key`` is not given.

    Raises:
        ConfigError: one line naming the file or flag, the key, and the problem.
    """
    source = _Source(path)
    raw = read_toml(path) if path is not None else {}
    backend_name = _file_backend(raw, source)
    _apply_overrides(raw, overrides, source, backend_name)
    config = _structure(raw, source)
    api_key = overrides.api_key or environ.get(API_KEY_ENV) or None
    return attrs.evolve(config, api_key=api_key)


def _file_backend(raw: dict[str, Any], source: _Source) -> str | None:
    """The backend the file picks (None: no table), refusing two tables or unknown ones."""
    if "backend" not in raw:
        return None
    tables = raw["backend"]
    if not isinstance(tables, dict):
        raise source.error(
            "backend", f"expected a table such as [backend.docker], got {_kind(tables)}"
        )
    for name in tables:
        if name not in BACKEND_NAMES:
            raise source.error(
                f"backend.{name}", f"unknown key (backends: {', '.join(BACKEND_NAMES)})"
            )
    if len(tables) > 1:
        found = " and ".join(f"[backend.{name}]" for name in tables)
        raise source.error("backend", f"only one backend table is allowed, found {found}")
    return next(iter(tables), None)


def _apply_overrides(
    raw: dict[str, Any], flags: CliOverrides, source: _Source, file_backend: str | None
) -> None:
    """Write the flags into the raw tables, remembering which key each flag set."""
    top: list[tuple[str, object, str]] = [
        ("worker_id", flags.worker_id, "--worker-id"),
        ("log_level", flags.log_level, "--log-level"),
        ("log_format", flags.log_format, "--log-format"),
        ("max_concurrent_tasks", flags.max_concurrent_tasks, "--max-concurrent-tasks"),
        ("idle_on_complete", flags.idle_on_complete, "--idle-on-complete"),
        ("task_timeout", flags.task_timeout, "--task-timeout"),
        ("shutdown_grace", flags.shutdown_grace, "--shutdown-grace"),
        ("metrics_addr", flags.metrics_addr, "--metrics-addr"),
        ("max_tasks", flags.max_tasks, "--max-tasks"),
        ("cleanup", False if flags.no_cleanup else None, "--no-cleanup"),
    ]
    for key, value, flag in top:
        if value is not None:
            _put(raw, "", key, value, flag, source)

    server = raw.setdefault("server", {})
    if isinstance(server, dict):  # else structuring reports the file's mistake
        if flags.websocket_url is not None:
            _put(server, "server", "websocket_url", flags.websocket_url, "--websocket-url", source)
        if flags.server_root_url is not None:
            _put(server, "server", "root_url", flags.server_root_url, "--server-root-url", source)

    backend = _choose_backend(raw, flags.backend, source, file_backend)
    table = raw["backend"][backend]
    if not isinstance(table, dict):
        return  # structuring reports the file's mistake with its key
    prefix = f"backend.{backend}"
    if flags.volumes:
        if backend != "docker":
            raise source.error("--volume", f"only the docker backend mounts volumes, not {backend}")
        _extend(table, prefix, "volumes", list(flags.volumes), "--volume", source)
    if flags.target_dir is not None:
        if backend != "direct":
            raise source.error("--target-dir", f"only the direct backend has one, not {backend}")
        _put(table, prefix, "target_dir", flags.target_dir, "--target-dir", source)
    env = [attrs.asdict(parse_env_flag(item)) for item in flags.env]
    _extend(table, prefix, "environment", env, "--env", source)


def _choose_backend(
    raw: dict[str, Any], flag: str | None, source: _Source, file_backend: str | None
) -> str:
    """The active backend's name; ``raw["backend"]`` then holds exactly its table."""
    if flag is None or flag == file_backend:
        backend = file_backend or "docker"
        raw.setdefault("backend", {backend: {}})
        return backend
    if flag not in BACKEND_NAMES:
        raise source.error("--backend", f"must be one of {', '.join(BACKEND_NAMES)}, got {flag!r}")
    # The flag wins over a different table in the file, with that backend's defaults.
    _put(raw, "", "backend", {flag: {}}, f"--backend {flag}", source)
    return flag


def _put(
    table: dict[str, Any], prefix: str, key: str, value: object, flag: str, source: _Source
) -> None:
    table[key] = value
    source.flags[_join(prefix, key)] = flag


def _extend(
    table: dict[str, Any], prefix: str, key: str, items: list[Any], flag: str, source: _Source
) -> None:
    """Append flag items to an array of the file, each remembered as set by ``flag``."""
    existing = table.setdefault(key, [])
    if not isinstance(existing, list):
        return  # structuring reports the file's mistake with its key
    for item in items:
        index = len(existing)
        existing.append(item)
        label = f"{flag} {item}" if isinstance(item, str) else f"{flag} {_env_text(item)}"
        source.flags[f"{prefix}.{key}[{index}]"] = label


def _env_text(item: Mapping[str, Any]) -> str:
    # Values may be secrets: an error names the variable, never its value.
    return str(item["name"]) if item.get("value") is None else f"{item['name']}=..."


def _structure(raw: dict[str, Any], source: _Source) -> WorkerConfig:
    """One strict cattrs pass over the merged tables; the first problem becomes the error."""
    tables = dict(raw)
    ((name, backend_table),) = tables.pop("backend").items()
    backend = _structure_part(backend_table, _BACKEND_CLASSES[name], f"backend.{name}", source)
    config = _structure_part(tables, WorkerConfig, "", source)
    return attrs.evolve(config, backend=backend)


def _structure_part(raw: object, cls: type[_T], path: str, source: _Source) -> _T:
    try:
        return _CONVERTER.structure(raw, cls)
    except (ClassValidationError, IterableValidationError, _Invalid) as exc:
        key, problem = next(iter(_problems(exc, path)))
        if key == "worker_id" and problem == "required":
            problem = "required: set worker_id in the config file or pass --worker-id"
        elif key == "backend.command.dispatch_command" and problem == "required":
            problem = "required: the command backend needs dispatch_command in [backend.command]"
        raise source.error(key, problem) from None


# --------------------------------------------------------------------------- writing


def _table(obj: Any) -> dict[str, Any]:
    """``obj`` in file shape: durations as text, tuples as arrays, ``None`` left out."""
    cls = type(obj)
    table: dict[str, Any] = {}
    for field in attrs.fields(cls):
        value = getattr(obj, field.name)
        if value is None or field.name in ("api_key", "backend"):
            continue
        if _is_duration(cls, field.name):
            table[field.name] = format_duration(value)
        elif isinstance(value, tuple):
            table[field.name] = [_table(item) if attrs.has(type(item)) else item for item in value]
        elif attrs.has(type(value)):
            table[field.name] = _table(value)
        else:
            table[field.name] = value
    return table


def dump_config(config: WorkerConfig) -> str:
    """``config`` as a TOML file of the same shape :func:`load_config` reads.

    The API key is never written: a comment only says whether one is set, so the
    output can be pasted into a bug report.
    """
    document = _table(config)
    server = document.pop("server")
    document["server"] = server
    document["backend"] = {config.backend_name: _table(config.backend)}
    key_state = "set (redacted)" if config.api_key else f"not set (use --api-key or {API_KEY_ENV})"
    header = f"# Effective ozw configuration.\n# api_key: {key_state}\n\n"
    return header + tomli_w.dumps(document)


def starter_config(backend: BackendName = "docker") -> str:
    """A commented starter file for ``backend`` (``ozw config init``); it loads as is."""
    return _STARTER_HEADER + _STARTER_BACKENDS[backend]


_STARTER_HEADER: Final = f"""\
# ozw: self-hosted worker for Oz cloud agents.
# Durations are strings such as "500ms", "90s", "45m", "1h30m".
# The API key is never read from this file: pass --api-key or set {API_KEY_ENV}.

# Required. How this worker appears in Oz. Change it: ids must be unique per
# worker, and ids starting with "warp" are reserved.
worker_id = "my-worker"

# Tasks run at once; 0 = unlimited. Beyond it, assignments are rejected and re-queued.
max_concurrent_tasks = 0

# false keeps containers / workspaces after a task, for debugging (--no-cleanup).
cleanup = true

# How long the agent stays up after finishing, passed to it verbatim.
# idle_on_complete = "45m"

# Fail a task that runs longer than this (unset: no limit).
# task_timeout = "2h"

# On SIGINT/SIGTERM, how long running tasks get to finish before they are stopped.
shutdown_grace = "30s"

# Serve Prometheus /metrics and a /healthz liveness probe here (unset: off).
# metrics_addr = "127.0.0.1:9090"

log_level = "info"     # debug, info, warning, error
log_format = "human"   # human, json

[server]
# Oz production endpoints.
websocket_url = "{DEFAULT_WEBSOCKET_URL}"
root_url = "{DEFAULT_ROOT_URL}"

# Exactly one backend table; none means docker with its defaults.
"""

_STARTER_BACKENDS: Final[dict[BackendName, str]] = {
    "docker": """\
[backend.docker]
# Image for tasks that name none.
default_image = "ubuntu:22.04"
# always, if-not-present or never.
pull_policy = "always"
# Extra binds for every task container, as for `docker run -v` (also -v/--volume).
volumes = []
# Variables for every task: a value sets, no value inherits the worker's (also -e/--env).
environment = [
  # { name = "HTTPS_PROXY", value = "http://proxy:3128" },
  # { name = "NPM_TOKEN" },
]
# After SIGTERM, how long a stopping container gets before SIGKILL.
kill_grace = "10s"
""",
    "direct": f"""\
[backend.direct]
# Per-task workspaces are created under this directory (mode 0700).
workspace_root = "{DEFAULT_WORKSPACE_ROOT}"
# The oz CLI; unset = `oz` on PATH.
# oz_path = "/usr/local/bin/oz"
# Run every task in this existing directory instead (--target-dir); never removed.
# target_dir = "/srv/checkout"
# Runs with /bin/sh -c in the workspace before the agent; may write dotenv lines
# to $OZ_ENVIRONMENT_FILE.
# setup_command = "./provision.sh"
# Runs after the agent, success or not.
# teardown_command = "./cleanup.sh"
setup_timeout = "10m"
teardown_timeout = "5m"
# Variables for every task: a value sets, no value inherits the worker's (also -e/--env).
environment = []
# After SIGTERM, how long the agent gets before SIGKILL.
kill_grace = "10s"
""",
    "command": """\
[backend.command]
# Required. Runs with /bin/sh -c, the task as JSON on stdin; exit 0 = handed off.
dispatch_command = "/opt/oz/dispatch.sh"
# Runs when the server cancels a task (OZ_RUN_ID, OZ_EXECUTION_ID set).
# cancel_command = "/opt/oz/cancel.sh"
# A dispatch running longer than this fails the task.
dispatch_timeout = "60s"
# Variables for the dispatch command: a value sets, no value inherits (also -e/--env).
environment = []
# After SIGTERM, how long a dispatch command gets before SIGKILL.
kill_grace = "10s"
""",
}

__all__ = [
    "API_KEY_ENV",
    "BACKEND_NAMES",
    "DEFAULT_ROOT_URL",
    "DEFAULT_WEBSOCKET_URL",
    "DEFAULT_WORKSPACE_ROOT",
    "BackendConfig",
    "BackendName",
    "CliOverrides",
    "CommandConfig",
    "ConfigError",
    "DirectConfig",
    "DockerConfig",
    "EnvEntry",
    "LogFormat",
    "LogLevel",
    "PullPolicy",
    "ServerConfig",
    "WorkerConfig",
    "dump_config",
    "format_duration",
    "load_config",
    "parse_duration",
    "parse_env_flag",
    "read_toml",
    "resolve_environment",
    "starter_config",
]
