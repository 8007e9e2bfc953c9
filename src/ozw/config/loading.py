"""Loading (file → raw tables → flags → one strict pass) and writing configurations.

Every problem becomes one :class:`ConfigError` line naming where the bad value came
from: ``config/worker.toml: server.root_url: ...`` or ``--task-timeout: ...``.

A config file is ozw's TOML or the Go worker's YAML, known by its name: ``*.yaml`` /
``*.yml`` is YAML, ``*.toml`` is TOML; any other name is read as TOML, and as YAML
when it is not TOML but is a YAML mapping. The YAML is read with Go's meaning
(:mod:`ozw.config.go_import`, the one mapping of its keys), then checked by the same
rules as the TOML.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import PurePath
from typing import Any, Final

import attrs
import tomli_w
import yaml
from cattrs.errors import ForbiddenExtraKeysError

from ozw.config.converter import CONVERTER
from ozw.config.flags import CliOverrides, Flag, given, split_items
from ozw.config.model import API_KEY_ENV, BACKEND_NAMES, BackendName, WorkerConfig
from ozw.config.rules import toml_kind, value_warnings
from ozw.strict import REQUIRED, describe, error_leaves, join


class ConfigError(Exception):
    """The configuration is wrong; the message is one line naming the key and the problem."""


_REQUIRED_HINTS: dict[str, str] = {
    "worker_id": "set worker_id in the config file or pass --worker-id",
    "backend.command.dispatch_command": "the command backend needs dispatch_command in "
    "[backend.command]",
}


@attrs.frozen
class _Source:
    """Where values came from, to name the file or the flag in an error."""

    file: str | None
    flags: dict[str, str] = attrs.field(factory=dict)  # dotted key → flag that set it
    warnings: list[str] = attrs.field(factory=list)

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


YAML_SUFFIXES: Final = (".yaml", ".yml")


def _read_bytes(path: str) -> bytes:
    try:
        # `~` as Go's kong expands a path flag (`--config-file=~/worker.yaml`).
        with open(os.path.expanduser(path), "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_config_file(path: str) -> tuple[dict[str, Any], list[str]]:
    """The tables of the TOML or Go YAML file at ``path`` and the warnings reading it
    gave (Go's meaning applied); any failure is one :class:`ConfigError` line."""
    data = _read_bytes(path)
    suffix = PurePath(path).suffix.lower()
    if suffix in YAML_SUFFIXES:
        return _go_yaml(path, data)
    try:
        return tomllib.loads(data.decode("utf-8")), []
    except tomllib.TOMLDecodeError as exc:
        if suffix != ".toml" and _is_yaml_mapping(data):
            return _go_yaml(path, data)
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8") from None


def _is_yaml_mapping(data: bytes) -> bool:
    try:
        return isinstance(yaml.safe_load(data), dict)
    except yaml.YAMLError:
        return False


def _go_yaml(path: str, data: bytes) -> tuple[dict[str, Any], list[str]]:
    from ozw.config.go_import import GoConfigError, read_go_config

    try:
        read = read_go_config(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid YAML: not UTF-8") from None
    except GoConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for key in read.unknown():
        raise ConfigError(f"{path}: {key}: unknown key (the Go worker refuses it too)")
    return read.tables(), [f"{path}: {line}" for line in read.warnings()]


def load_config(
    path: str | None,
    overrides: CliOverrides,
    environ: Mapping[str, str],
    *,
    require_worker_id: bool = True,
) -> WorkerConfig:
    """The effective configuration: the file at ``path`` (if any), then the flags.

    ``environ`` supplies ``WARP_API_KEY`` when ``--api-key`` is not given. Without
    ``require_worker_id`` a missing id is ``""`` (``config show`` of the defaults).

    Raises:
        ConfigError: one line naming the file or flag, the key, and the problem.
    """
    source = _Source(path)
    raw, file_warnings = read_config_file(path) if path is not None else ({}, [])
    source.warnings.extend(file_warnings)
    backend = _choose_backend(raw, overrides.backend, source, _file_backend(raw, source))
    _apply_flags(raw, overrides, source, backend)
    unset_id = not require_worker_id and "worker_id" not in raw
    if unset_id:
        raw["worker_id"] = "unset"  # passes the rule; replaced by "" below
    try:
        config = CONVERTER.structure(raw, WorkerConfig)
    except Exception as exc:  # cattrs raises several kinds; each leaf has a path
        order = {key: index for index, key in enumerate(raw)}
        leaves = sorted(error_leaves(exc, ""), key=lambda kl: order.get(_top(kl[0]), len(order)))
        problems = [str(source.error(key, _problem(key, leaf))) for key, leaf in leaves]
        raise ConfigError(_listed(problems, source.file)) from None
    if overrides.api_key is not None and not overrides.api_key.strip():
        # Given but empty: not "unset" (that would quietly take WARP_API_KEY instead).
        raise ConfigError("--api-key: must not be empty")
    api_key = overrides.api_key or environ.get(API_KEY_ENV) or None
    worker_id = "" if unset_id else config.worker_id
    source.warnings.extend(value_warnings(config))
    return attrs.evolve(
        config, api_key=api_key, worker_id=worker_id, warnings=tuple(source.warnings)
    )


MAX_PROBLEMS = 10
"""Problems listed in one error; past them the count alone."""


def _top(key: str) -> str:
    """The top-level key a dotted path lies in (problems are listed in file order)."""
    return re.split(r"[.\[]", key, maxsplit=1)[0]


def _problem(key: str, leaf: BaseException) -> str:
    """What is wrong at ``key``, with the hint that fixes it when there is one."""
    problem = describe(leaf)
    if key == "api_key":
        problem += f" (the API key is never read from a file: use --api-key or {API_KEY_ENV})"
    elif problem == REQUIRED and key in _REQUIRED_HINTS:
        problem += f": {_REQUIRED_HINTS[key]}"
    elif isinstance(leaf, ForbiddenExtraKeysError) and attrs.has(leaf.cl):
        known = [f.name for f in attrs.fields(leaf.cl) if f.name != "api_key"]
        problem += did_you_mean(key.rpartition(".")[2], known)
    return problem


def did_you_mean(word: str, known: list[str]) -> str:
    """`` (did you mean `x`?)`` for the closest of ``known`` to a misspelt ``word``, else ""."""
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _listed(problems: list[str], file: str | None) -> str:
    """Every problem in one line (at most :data:`MAX_PROBLEMS`), the file named once."""
    prefix = f"{file}: " if file is not None else ""
    shown = [problems[0]] + [
        p.removeprefix(prefix) if prefix else p for p in problems[1:MAX_PROBLEMS]
    ]
    text = "; ".join(shown)
    if len(problems) > MAX_PROBLEMS:
        text += f"; and {len(problems) - MAX_PROBLEMS} more"
    return text


def _file_backend(raw: dict[str, Any], source: _Source) -> str | None:
    """The backend the file picks (None: no table), refusing two tables or unknown ones."""
    if "backend" not in raw:
        return None
    tables = raw["backend"]
    if not isinstance(tables, dict):
        raise source.error(
            "backend", f"expected a table such as [backend.docker], got {toml_kind(tables)}"
        )
    for name in tables:
        if name not in BACKEND_NAMES:
            hint = (
                did_you_mean(name, list(BACKEND_NAMES))
                or f" (backends: {', '.join(BACKEND_NAMES)})"
            )
            raise source.error(f"backend.{name}", f"unknown key{hint}")
    if len(tables) > 1:
        found = " and ".join(f"[backend.{name}]" for name in tables)
        raise source.error("backend", f"only one backend table is allowed, found {found}")
    return next(iter(tables), None)


def _choose_backend(
    raw: dict[str, Any], flag: str | None, source: _Source, file_backend: str | None
) -> str:
    """The active backend's name; ``raw["backend"]`` then holds exactly its table."""
    if not flag or flag == file_backend:  # Go: --backend "" is not given
        backend = file_backend or "docker"
        raw.setdefault("backend", {backend: {}})
        return backend
    if flag not in BACKEND_NAMES:
        raise source.error("--backend", f"must be one of {', '.join(BACKEND_NAMES)}, got {flag!r}")
    # The flag wins over a different table in the file, with that backend's defaults.
    raw["backend"] = {flag: {}}
    source.flags["backend"] = f"--backend {flag}"
    return flag


def _apply_flags(
    raw: dict[str, Any], overrides: CliOverrides, source: _Source, backend: str
) -> None:
    """Write the given flags into the raw tables, remembering which key each flag set."""
    for flag, value in given(overrides):
        if flag.key is None or flag.key == "backend":
            continue  # not a key of the file, or already applied
        *parents, key = flag.key.split(".")
        if parents[:1] == ["backend"]:
            if flag.only is not None and flag.only[0] != backend:
                only, does = flag.only
                source.warnings.append(
                    f"{flag.label}: ignored: only the {only} backend {does}, not {backend} "
                    "(the Go worker ignores it too)"
                )
                continue
            parents.insert(1, backend)
        table = _table_at(raw, parents)
        if table is None:
            continue  # structuring reports the file's mistake with its key
        prefix = ".".join(parents)
        if flag.action == "append":
            _extend(table, prefix, key, value, flag, source)
        else:
            table[key] = flag.value if flag.action == "store_true" else value
            source.flags[join(prefix, key)] = flag.label


def _table_at(raw: dict[str, Any], parents: list[str]) -> dict[str, Any] | None:
    table = raw
    for part in parents:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            return None
    return table


def _extend(
    table: dict[str, Any],
    prefix: str,
    key: str,
    items: tuple[str, ...],
    flag: Flag,
    source: _Source,
) -> None:
    """Append flag items to an array of the file, each remembered as set by ``flag``."""
    existing = table.setdefault(key, [])
    if not isinstance(existing, list):
        return  # structuring reports the file's mistake with its key
    texts = [part for text in items for part in split_items(text)] if flag.split else items
    for text in texts:
        item = flag.item(text)
        source.flags[f"{prefix}.{key}[{len(existing)}]"] = f"{flag.label} {_shown(item)}"
        existing.append(item)


def _shown(item: object) -> str:
    if isinstance(item, Mapping):
        # Values may be secrets (-e NAME=VALUE): an error names the variable, never its value.
        return str(item["name"]) if item.get("value") is None else f"{item['name']}=..."
    return str(item)


def dump_config(config: WorkerConfig) -> str:
    """``config`` as a TOML file of the same shape :func:`load_config` reads.

    The API key is never written (a comment only says whether one is set) and a
    proxy's credentials are masked, so the output can be pasted into a bug report.
    """
    document: dict[str, Any] = CONVERTER.unstructure(config)
    document["backend"] = document.pop("backend")  # the backend table last, as in the starter
    key_state = "set (redacted)" if config.api_key else f"not set (use --api-key or {API_KEY_ENV})"
    header = f"# Effective ozw configuration.\n# api_key: {key_state}\n"
    header += "".join(f"# warning: {line}\n" for line in config.warnings)
    if not config.worker_id:
        del document["worker_id"]
        header += "# worker_id: not set (required: set it in the file or pass --worker-id)\n"
    return header + "\n" + tomli_w.dumps(document)


def starter_config(backend: BackendName = "docker") -> str:
    """A commented starter file for ``backend`` (``ozw config init``); it loads as is."""
    starters = resources.files("ozw.config") / "starters"
    header = (starters / "header.toml").read_text(encoding="utf-8")
    return header + (starters / f"{backend}.toml").read_text(encoding="utf-8")
