"""The operator's ``pod_template``, checked at load time against the Kubernetes model.

A template is a PodSpec, written inline in TOML (``pod_template``) or in a YAML file
(``pod_template_file``). The Go worker passes it to the API server unchecked, so a
misspelt key (``nodeSelecter``) silently does nothing. Here every key is checked
against the PodSpec model of lightkube-models (the OpenAPI schema of a recent
Kubernetes release) and every value against its type, before the worker starts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import msgspec.inspect as mi
import yaml
from lightkube.models.core_v1 import PodSpec, ResourceRequirements


class TemplateError(ValueError):
    """A template is not a valid object of its kind; the message names the key."""


def _unknown_keys(value: object, info: mi.Type, path: str) -> Iterable[str]:
    """Paths of keys in ``value`` that the model type ``info`` does not have."""
    match info:
        case mi.UnionType(types=types):
            for member in types:
                if not isinstance(member, mi.NoneType):
                    yield from _unknown_keys(value, member, path)
        case mi.ListType(item_type=item) if isinstance(value, list):
            for index, element in enumerate(value):
                yield from _unknown_keys(element, item, f"{path}[{index}]")
        case mi.DictType(value_type=item) if isinstance(value, dict):
            for key, element in value.items():
                yield from _unknown_keys(element, item, f"{path}.{key}")
        case mi.StructType(fields=fields) if isinstance(value, dict):
            known = {field.encode_name: field.type for field in fields}
            for key, element in value.items():
                if key not in known:
                    yield f"{path}.{key}"
                else:
                    yield from _unknown_keys(element, known[key], f"{path}.{key}")


def check_object(data: object, model: type[msgspec.Struct], path: str) -> dict[str, Any]:
    """``data`` as a plain dict after checking it against ``model``.

    Raises:
        TemplateError: a key ``model`` does not know, or a value of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise TemplateError(f"{path}: expected a table, got {type(data).__name__}")
    plain = copy.deepcopy(dict(data))
    unknown = sorted(_unknown_keys(plain, mi.type_info(model), path))
    if unknown:
        raise TemplateError(f"{unknown[0]}: unknown key (not in the Kubernetes {model.__name__})")
    try:
        msgspec.convert(plain, model)
    except msgspec.ValidationError as exc:
        raise TemplateError(f"{path}: {_located(exc, path)}") from None
    return plain


def _located(exc: msgspec.ValidationError, path: str) -> str:
    """msgspec's ``... - at `$.a.b` `` with ``$`` spelled as the config key."""
    return str(exc).replace("`$", f"`{path}")


def check_pod_spec(data: object, path: str = "pod_template") -> dict[str, Any]:
    """A PodSpec template checked; ``containers`` may be left out (the worker adds ``task``)."""
    plain = check_object(
        {"containers": [], **data} if isinstance(data, Mapping) else data, PodSpec, path
    )
    if not plain["containers"]:
        del plain["containers"]
    return plain


def check_resources(data: object, path: str = "preflight_resources") -> dict[str, Any]:
    """A ResourceRequirements table checked (``requests``, ``limits``)."""
    return check_object(data, ResourceRequirements, path)


def load_pod_template_file(path: str) -> dict[str, Any]:
    """Read and check a PodSpec from a YAML file.

    Raises:
        TemplateError: the file cannot be read, is not YAML, or is not a PodSpec.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except OSError as exc:
        raise TemplateError(f"pod_template_file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise TemplateError(f"pod_template_file {path}: not valid YAML{line}") from None
    return check_pod_spec(data if data is not None else {}, f"pod_template_file {path}")
