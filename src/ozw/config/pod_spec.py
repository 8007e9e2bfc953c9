"""The operator's ``pod_template``, checked at load time against the Kubernetes model.

A template is a PodSpec, written inline in TOML (``pod_template``) or in a YAML file
(``pod_template_file``). The Go worker passes it to the API server unchecked, so a
misspelt key (``nodeSelecter``) silently does nothing. Here every key is checked
against the PodSpec model of lightkube-models (the OpenAPI schema of a recent
Kubernetes release) and every value against its type, before the worker starts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, Final

import msgspec
import msgspec.inspect as mi
import yaml
from lightkube.models.core_v1 import PodSpec, ResourceRequirements


class TemplateError(ValueError):
    """A template is not a valid object of its kind; the message names the key."""


def _prune(value: Any, info: mi.Type, path: str, dropped: list[str]) -> Any:
    """``value`` without the keys the model type ``info`` lacks; their paths go to ``dropped``."""
    match info:
        case mi.UnionType(types=types):
            for member in types:
                if not isinstance(member, mi.NoneType):
                    value = _prune(value, member, path, dropped)
        case mi.ListType(item_type=item) if isinstance(value, list):
            return [_prune(v, item, f"{path}[{i}]", dropped) for i, v in enumerate(value)]
        case mi.DictType(value_type=item) if isinstance(value, dict):
            return {k: _prune(v, item, f"{path}.{k}", dropped) for k, v in value.items()}
        case mi.StructType(fields=fields) if isinstance(value, dict):
            known = {field.encode_name: field.type for field in fields}
            dropped.extend(f"{path}.{key}" for key in value if key not in known)
            return {
                key: _prune(element, known[key], f"{path}.{key}", dropped)
                for key, element in value.items()
                if key in known
            }
    return value


def prune_unknown_keys(data: object, model: str, path: str) -> tuple[object, list[str]]:
    """``data`` without the keys the Kubernetes ``model`` (``"PodSpec"``, ...) lacks, and
    their paths: what Kubernetes' own lenient decoder (the Go worker's) does silently."""
    models: dict[str, type[msgspec.Struct]] = {
        "PodSpec": PodSpec,
        "ResourceRequirements": ResourceRequirements,
    }
    dropped: list[str] = []
    kept = _prune(data, mi.type_info(models[model]), path, dropped)
    return kept, sorted(dropped)


QUANTITY_MAPS: Final = {
    "ResourceRequirements": ("limits", "requests"),
    "VolumeResourceRequirements": ("limits", "requests"),
    "PodSpec": ("overhead",),
}
"""Maps of quantities by model and field (the models type them as plain dicts)."""


def quantity_text(value: object, path: str) -> str:
    """A quantity as Kubernetes text: a number (``cpu = 1``, ``memory = 1024``, as the
    API server accepts them) becomes its decimal text; text stays as it is."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    raise TemplateError(f'{path}: expected a quantity (such as "500m", "1Gi" or 2), got {value!r}')


def _is_quantity(model: type, name: str) -> bool:
    # lightkube-models keeps the OpenAPI type in each field's annotation.
    return "resource.Quantity" in str(getattr(model, "__annotations__", {}).get(name, ""))


def _quantities_as_text(value: Any, info: mi.Type, path: str) -> Any:
    """``value`` (checked for unknown keys) with every quantity as text."""
    match info:
        case mi.UnionType(types=types):
            for member in types:
                value = _quantities_as_text(value, member, path)
        case mi.ListType(item_type=item) if isinstance(value, list):
            return [_quantities_as_text(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        case mi.DictType(value_type=item) if isinstance(value, dict):
            return {k: _quantities_as_text(v, item, f"{path}.{k}") for k, v in value.items()}
        case mi.StructType(cls=model, fields=fields) if isinstance(value, dict):
            known = {field.encode_name: field for field in fields}
            maps = QUANTITY_MAPS.get(model.__name__, ())
            converted = {}
            for key, element in value.items():
                where = f"{path}.{key}"
                if key in maps and isinstance(element, dict):
                    element = {k: quantity_text(q, f"{where}.{k}") for k, q in element.items()}
                elif element is not None and _is_quantity(model, known[key].name):
                    element = quantity_text(element, where)
                else:
                    element = _quantities_as_text(element, known[key].type, where)
                converted[key] = element
            return converted
    return value


def check_object(data: object, model: type[msgspec.Struct], path: str) -> dict[str, Any]:
    """``data`` as a plain dict after checking it against ``model``, every quantity
    written as a number turned into text.

    Raises:
        TemplateError: a key ``model`` does not know, or a value of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise TemplateError(f"{path}: expected a table, got {type(data).__name__}")
    plain = copy.deepcopy(dict(data))
    unknown: list[str] = []
    _prune(plain, mi.type_info(model), path, unknown)
    if unknown:
        raise TemplateError(f"{min(unknown)}: unknown key (not in the Kubernetes {model.__name__})")
    plain = _quantities_as_text(plain, mi.type_info(model), path)
    try:
        msgspec.convert(plain, model)
    except msgspec.ValidationError as exc:
        raise TemplateError(f"{path}: {_located(exc, path)}") from None
    return dict(plain)


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
