"""The Go ``oz-agent-worker``'s YAML config, read with Go's meaning: the one mapping
from its keys to ozw's tables, used both to run from the YAML file as it is
(``--config-file config.yaml``) and by ``ozw config import`` to write the TOML.

The Go worker decodes its YAML into typed structs (``internal/config/config.go``):
a string field takes any scalar as written (``value: yes`` is the text ``yes``), and
Kubernetes sub-trees (``pod_template``, ``preflight_resources``) are decoded as
Kubernetes decodes YAML. This module reads the file the same way: scalars as text
where Go wants text, typed values inside those sub-trees. Every key the Go worker
knows is carried over; any other key, and any value TOML cannot hold, becomes a
comment, so nothing is lost silently. Go's values keep Go's meaning: durations are
read as Go's ``time.ParseDuration`` reads them (``dispatch_timeout: 0s`` is Go's
default of 60 s), and ``pod_template`` keys Kubernetes does not know are dropped, as
Go's decoder drops them, each with a warning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, get_args

import attrs
import tomli_w
import yaml

from ozw.config.durations import format_duration, parse_go_duration
from ozw.config.model import API_KEY_ENV, LogLevel


class GoConfigError(Exception):
    """The YAML cannot be converted; the message is one line naming the key."""


_PULL_POLICIES: Final = ("Always", "Never", "IfNotPresent")
_LOG_LEVELS: Final = get_args(LogLevel)
_NULL_TAG: Final = "tag:yaml.org,2002:null"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


class _TextLoader(yaml.SafeLoader):
    """YAML where every scalar but null stays text, as Go decodes into string fields."""


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in (_NULL_TAG, _MERGE_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise GoConfigError(f"{key}: expected a string, got {_kind(value)}")
    return value


def _boolean(value: object, key: str) -> bool:
    # yaml.v3 still reads YAML 1.1's yes/no/on/off into a bool field.
    word = _text(value, key).lower()
    if word in ("true", "yes", "on"):
        return True
    if word in ("false", "no", "off"):
        return False
    raise GoConfigError(f"{key}: expected true or false, got {value!r}")


def _integer(value: object, key: str) -> int:
    try:
        return int(_text(value, key).replace("_", ""), 0)
    except ValueError:
        raise GoConfigError(f"{key}: expected an integer, got {value!r}") from None


_REFUSED: Final = "(the Go worker refuses it too)"


def _one_word(value: object, key: str) -> str:
    """Text without spaces or tabs: the Go worker's ``no_whitespace`` rule."""
    text = _text(value, key)
    if " " in text or "\t" in text:
        raise GoConfigError(f"{key}: {text!r} must not contain whitespace {_REFUSED}")
    return text


def _pull_policy(value: object, key: str) -> str:
    text = _text(value, key)
    if text and text not in _PULL_POLICIES:
        policies = ", ".join(_PULL_POLICIES)
        raise GoConfigError(f"{key}: expected one of {policies}, got {text!r} {_REFUSED}")
    return text


def _log_level(value: object, key: str) -> str:
    """A level as ``--log-level`` takes it (Go's ``warn`` is ``warning``)."""
    text = _text(value, key)
    level = "warning" if text == "warn" else text
    if level not in _LOG_LEVELS:
        raise GoConfigError(f"{key}: expected one of debug, info, warn, error, got {text!r}")
    return level


def _go_duration(value: object, key: str) -> str:
    """A Go duration as ozw's text; zero or negative is "not set" where Go says so."""
    text = _text(value, key)
    try:
        seconds = parse_go_duration(text)
    except ValueError as exc:
        raise GoConfigError(f"{key}: {exc}") from None
    if seconds <= 0:
        # Go: a dispatch timeout <= 0 is the 60 s default; an unschedulable timeout
        # <= 0 turns the check off (ozw: 0s).
        return "60s" if key.endswith("dispatch_timeout") else "0s"
    return format_duration(max(seconds, 0.001))  # ozw counts whole milliseconds


def _texts(value: object, key: str) -> list[str]:
    if not isinstance(value, list):
        raise GoConfigError(f"{key}: expected a list, got {_kind(value)}")
    return [_text(item, f"{key}[{index}]") for index, item in enumerate(value)]


def _text_map(value: object, key: str) -> dict[str, str]:
    table = _mapping(value, key)
    return {name: _text(item, f"{key}.{name}") for name, item in table.items()}


def _environment(value: object, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise GoConfigError(f"{key}: expected a list, got {_kind(value)}")
    entries: list[dict[str, str]] = []
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        entry = _mapping(item, where)
        unknown = sorted(set(entry) - {"name", "value"})
        if unknown:
            raise GoConfigError(f"{where}.{unknown[0]}: unknown key (entries have name and value)")
        name = _one_word(entry.get("name"), f"{where}.name")
        if not name:
            raise GoConfigError(f"{where}.name: required {_REFUSED}")
        converted = {"name": name}
        if entry.get("value") is not None:
            converted["value"] = _text(entry["value"], f"{where}.value")
        entries.append(converted)
    return entries


def _mapping(value: object, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GoConfigError(f"{key}: expected a mapping, got {_kind(value)}")
    return {str(name): item for name, item in value.items()}


def _kind(value: object) -> str:
    match value:
        case None:
            return "null"
        case str():
            # Every scalar is read as text (as Go's decoder sees it): show the value
            # the operator wrote, not a type they did not choose (`backend: 5`).
            return repr(value if len(value) <= 40 else value[:40] + "...")
        case list():
            return "a list"
        case dict():
            return "a mapping"
    return type(value).__name__


_Convert = Callable[[object, str], object]
_TYPED: Final = {"pod_template": "PodSpec", "preflight_resources": "ResourceRequirements"}
"""The Kubernetes sub-trees, taken from the typed reading of the file, by model."""

# Every key of the Go worker's FileConfig, with how its value is read. The ozw key
# has the same name in each case (docs/protocol.md for Kubernetes).
_TOP_KEYS: Final[dict[str, _Convert]] = {
    "worker_id": _text,
    "cleanup": _boolean,
    "max_concurrent_tasks": _integer,
    "idle_on_complete": _text,
}
_OZW_ONLY_KEYS: Final[dict[str, _Convert]] = {"log_level": _log_level}
"""Keys the Go worker's file refuses (it takes them as flags) that ozw's file has:
converted, with a note, since a file holding one was never a working Go config."""
_BACKEND_KEYS: Final[dict[str, dict[str, _Convert | str]]] = {
    "docker": {"volumes": _texts, "environment": _environment},
    "direct": {
        "workspace_root": _text,
        "target_dir": _text,
        "oz_path": _text,
        "setup_command": _text,
        "teardown_command": _text,
        "environment": _environment,
    },
    "command": {
        "dispatch_command": _text,
        "cancel_command": _text,
        "dispatch_timeout": _go_duration,
        "environment": _environment,
    },
    "kubernetes": {
        "namespace": _text,
        "kubeconfig": _text,
        "default_image": _one_word,
        "image_pull_policy": _pull_policy,
        "use_image_volumes": _boolean,
        "preflight_image": _one_word,
        "sidecar_image": _one_word,
        "setup_command": _text,
        "teardown_command": _text,
        "extra_labels": _text_map,
        "extra_annotations": _text_map,
        "active_deadline_seconds": _integer,
        "ttl_seconds_after_finished": _integer,
        "workspace_size_limit": _text,
        "unschedulable_timeout": _go_duration,
        "coding_cli_sidecars": _text_map,
        "pod_template": "typed",
        "preflight_resources": "typed",
    },
}
GO_BACKEND_KEYS: Final = {name: tuple(keys) for name, keys in _BACKEND_KEYS.items()}
GO_TOP_KEYS: Final = tuple(_TOP_KEYS)


_UNKNOWN: Final = "unknown key; the Go worker refuses it too"


@attrs.define
class _Section:
    """One table read: its values, the keys Go does not know, the comments above it."""

    prefix: str = ""
    values: dict[str, Any] = attrs.field(factory=dict)
    unknown: list[str] = attrs.field(factory=list)
    """Dotted keys the Go worker does not know (it refuses them)."""
    notes: list[str] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)
    """Go's meaning applied where ozw's own file would say more (shown when running too)."""

    def unconverted(self, key: str, value: object, why: str = _UNKNOWN) -> None:
        self.notes.append(f"not converted ({why}): {key} = {_shown(value)}")


@attrs.frozen
class GoConfig:
    """A Go worker's YAML file, read with Go's meaning as ozw's tables."""

    top: _Section
    backend: tuple[str, _Section] | None

    def tables(self) -> dict[str, Any]:
        """The raw tables ozw's loader structures, as if read from the TOML file."""
        tables = dict(self.top.values)
        if self.backend is not None:
            name, section = self.backend
            tables["backend"] = {name: dict(section.values)}
        return tables

    def _sections(self) -> list[_Section]:
        return [self.top] + ([self.backend[1]] if self.backend is not None else [])

    def unknown(self) -> list[str]:
        """Dotted keys the Go worker would refuse as unknown."""
        return [key for section in self._sections() for key in section.unknown]

    def warnings(self) -> list[str]:
        return [line for section in self._sections() for line in section.warnings]


def _shown(value: object) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _read_yaml(text: str, loader: type[yaml.SafeLoader]) -> Any:
    try:
        return yaml.load(text, Loader=loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise GoConfigError(f"invalid YAML: {where}{exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise GoConfigError(f"invalid YAML: {exc}") from None


def read_go_config(text: str) -> GoConfig:
    """The Go worker's YAML ``text`` as ozw's tables, with Go's meaning.

    Raises:
        GoConfigError: the YAML is malformed or a known key has a value the Go worker
            would refuse too (the message names the key).
    """
    plain = _read_yaml(text, _TextLoader)
    typed = _read_yaml(text, yaml.SafeLoader)
    if plain is None:
        plain, typed = {}, {}
    document = _mapping(plain, "the file")
    top = _Section()
    for key, value in document.items():
        if key == "backend":
            continue
        if key in _TOP_KEYS and value is not None:
            top.values[key] = _TOP_KEYS[key](value, key)
        elif key in _OZW_ONLY_KEYS and value is not None:
            top.values[key] = _OZW_ONLY_KEYS[key](value, key)
            top.notes.append(
                f"note: {key} converted, but the Go worker refuses this key in its file "
                f"(it takes --{key.replace('_', '-')})"
            )
        elif key not in _TOP_KEYS:
            top.unknown.append(key)
            top.unconverted(key, value)
    return GoConfig(top, _backend(document.get("backend"), typed.get("backend")))


def convert(text: str, source: str) -> str:
    """The ozw TOML equivalent of the Go worker's YAML ``text`` (read from ``source``).

    Raises:
        GoConfigError: as :func:`read_go_config`.
    """
    read = read_go_config(text)
    return _render(source, read.top, read.backend)


def _backend(plain: object, typed: Any) -> tuple[str, _Section] | None:
    if plain is None:
        return None
    given = _mapping(plain, "backend").items()
    tables = {name: table for name, table in given if table is not None}
    unknown = sorted(set(tables) - set(_BACKEND_KEYS))
    if unknown:
        raise GoConfigError(f"backend.{unknown[0]}: unknown backend (the Go worker refuses it too)")
    if len(tables) > 1:
        found = ", ".join(tables)
        raise GoConfigError(f"backend: at most one backend may be configured, found {found}")
    if not tables:
        return None
    ((name, table),) = tables.items()
    section = _Section(f"backend.{name}")
    for key, value in _mapping(table, f"backend.{name}").items():
        convert_value = _BACKEND_KEYS[name].get(key)
        where = f"backend.{name}.{key}"
        if convert_value is None:
            section.unknown.append(where)
            section.unconverted(key, value)
        elif value is None:
            continue  # null is absent, as in Go
        elif convert_value == "typed":
            tree = _toml_tree(typed[name][key], key, section)
            section.values[key] = _known_kubernetes_keys(tree, key, section)
        else:
            assert callable(convert_value)
            section.values[key] = convert_value(value, where)
    if name == "command" and not section.values.get("dispatch_command"):
        raise GoConfigError(f"backend.command.dispatch_command: required {_REFUSED}")
    if any("value" not in entry for entry in section.values.get("environment", [])):
        section.notes.append(
            "note: an environment entry without value inherits the worker's variable; ozw "
            'leaves it unset when the worker has none (the Go worker set it to "")'
        )
    return name, section


def _known_kubernetes_keys(tree: Any, key: str, section: _Section) -> Any:
    """``tree`` without the keys its Kubernetes model lacks: Go's decoder drops them."""
    # Imported here: the models (lightkube) load only when a template is configured.
    from ozw.config.pod_spec import prune_unknown_keys

    kept, dropped = prune_unknown_keys(tree, _TYPED[key], key)
    for path in dropped:
        section.warnings.append(
            f"{section.prefix}.{path}: not a Kubernetes {_TYPED[key]} field; ignored, as the "
            "Go worker ignores it"
        )
    return kept


def _toml_tree(value: Any, path: str, section: _Section) -> Any:
    """A typed YAML sub-tree TOML can hold: nulls (TOML has none) are left out, noted."""
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if item is None:
                section.unconverted(f"{path}.{key}", None, "TOML has no null; left out")
            else:
                kept[str(key)] = _toml_tree(item, f"{path}.{key}", section)
        return kept
    if isinstance(value, list):
        return [_toml_tree(item, f"{path}[{index}]", section) for index, item in enumerate(value)]
    return value


def _render(source: str, top: _Section, backend: tuple[str, _Section] | None) -> str:
    lines = [
        f"# Converted by `ozw config import` from {source} (a Go oz-agent-worker config).",
        f"# The API key is never read from this file: pass --api-key or set {API_KEY_ENV}.",
        "",
    ]
    if "worker_id" not in top.values:
        lines.append('# worker_id = "..."  (required: set it here or pass --worker-id)')
    body = tomli_w.dumps(top.values)
    if body:
        lines.append(body.rstrip("\n"))
    lines += [f"# {note}" for note in top.notes + top.warnings]
    if backend is not None:
        name, section = backend
        lines += ["", *(f"# {note}" for note in section.notes + section.warnings)]
        lines.append(tomli_w.dumps({"backend": {name: section.values}}).rstrip("\n"))
    return "\n".join(lines) + "\n"
