"""Laying the worker's parts over the operator's ``pod_template``, as pure functions.

The template is the operator's: its fields stay unless the worker must own one
(image, command, working directory), and lists and maps are merged, not replaced
(env by name, resources per key).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ozw.config import KubernetesConfig
from ozw.config.pod_spec import load_pod_template_file
from ozw.tasks.params import Shape


def pod_spec_template(config: KubernetesConfig) -> dict[str, Any]:
    """The configured PodSpec template (a fresh copy), empty when there is none."""
    if config.pod_template_file is not None:
        return load_pod_template_file(config.pod_template_file)
    return copy.deepcopy(config.pod_template or {})


def merge_env(
    base: Sequence[Mapping[str, Any]], override: Sequence[Mapping[str, Any]]
) -> list[Any]:
    """``base`` with ``override`` on top: same names replaced in place, new ones appended."""
    result = [dict(entry) for entry in base]
    where = {entry["name"]: index for index, entry in enumerate(result)}
    for entry in override:
        if entry["name"] in where:
            result[where[entry["name"]]] = dict(entry)
        else:
            where[entry["name"]] = len(result)
            result.append(dict(entry))
    return result


def cpu_quantity(vcpus: float) -> str:
    return str(int(vcpus)) if float(vcpus).is_integer() else f"{round(vcpus * 1000)}m"


def memory_quantity(gigabytes: float) -> str:
    if float(gigabytes).is_integer():
        return f"{int(gigabytes)}Gi"
    return f"{round(gigabytes * 1024)}Mi"


def shape_resources(shape: Shape | None) -> dict[str, dict[str, str]]:
    """Requests = limits from the instance shape (each axis only when positive)."""
    sizes: dict[str, str] = {}
    if shape is not None and shape.vcpus and shape.vcpus > 0:
        sizes["cpu"] = cpu_quantity(shape.vcpus)
    if shape is not None and shape.memory_gb and shape.memory_gb > 0:
        sizes["memory"] = memory_quantity(shape.memory_gb)
    return {"requests": dict(sizes), "limits": dict(sizes)} if sizes else {}


def merge_resources(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Per-resource merge of requests and limits; ``override`` wins per key."""
    merged = copy.deepcopy(dict(base))
    for kind in ("requests", "limits"):
        if override.get(kind):
            merged[kind] = {**merged.get(kind, {}), **override[kind]}
    return merged


def overlay_task_container(template: dict[str, Any], ours: Mapping[str, Any]) -> dict[str, Any]:
    """A template container named ``task`` with ours laid over it (docs/protocol.md)."""
    merged = copy.deepcopy(template)
    for key in ("image", "command", "args", "workingDir"):
        merged[key] = ours[key]
    merged.setdefault("imagePullPolicy", ours["imagePullPolicy"])
    merged["volumeMounts"] = [*merged.get("volumeMounts", []), *ours["volumeMounts"]]
    merged["env"] = merge_env(merged.get("env", []), ours["env"])
    if "lifecycle" in ours:
        merged["lifecycle"] = ours["lifecycle"]
    if "resources" in ours:
        merged["resources"] = merge_resources(merged.get("resources", {}), ours["resources"])
    return merged
