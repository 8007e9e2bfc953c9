"""What the fake API server says about itself: version, discovery, OpenAPI, schemas.

Discovery lists exactly the resources the fake serves; the OpenAPI v3 documents are
the minimum kubectl reads before it asks the server to validate strictly, and the
strict validation itself uses the official schema (kubernetes-validate).
"""

from __future__ import annotations

from typing import Any

from tests.kubernetes.fakeapi.store import ApiError, Obj

VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0-fake",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
RESOURCES: dict[str, list[Obj]] = {
    "v1": [
        {
            "name": "pods",
            "singularName": "pod",
            "namespaced": True,
            "kind": "Pod",
            "verbs": _VERBS,
            "shortNames": ["po"],
        },
        {
            "name": "namespaces",
            "singularName": "namespace",
            "namespaced": False,
            "kind": "Namespace",
            "verbs": ["get"],
            "shortNames": ["ns"],
        },
        {
            "name": "pods/log",
            "singularName": "",
            "namespaced": True,
            "kind": "Pod",
            "verbs": ["get"],
        },
        {
            "name": "secrets",
            "singularName": "secret",
            "namespaced": True,
            "kind": "Secret",
            "verbs": _VERBS,
        },
        {
            "name": "events",
            "singularName": "event",
            "namespaced": True,
            "kind": "Event",
            "verbs": _VERBS,
            "shortNames": ["ev"],
        },
    ],
    "batch/v1": [
        {
            "name": "jobs",
            "singularName": "job",
            "namespaced": True,
            "kind": "Job",
            "verbs": _VERBS,
            "categories": ["all"],
        },
        {
            "name": "jobs/status",
            "singularName": "",
            "namespaced": True,
            "kind": "Job",
            "verbs": ["get", "patch", "update"],
        },
    ],
    "authorization.k8s.io/v1": [
        {
            "name": "selfsubjectaccessreviews",
            "singularName": "selfsubjectaccessreview",
            "namespaced": False,
            "kind": "SelfSubjectAccessReview",
            "verbs": ["create"],
        },
    ],
}


def strict_check(body: Obj) -> None:
    """``fieldValidation=Strict`` (what kubectl asks for): an unknown field is a 400, as
    the real server's strict decoding makes it. The official schema decides."""
    import re as regex

    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    try:
        kubernetes_validate.validate(body, "1.37.0", strict=True)
    except ValidationError as error:
        found = regex.search(r"\('(.+)' was unexpected\)", error.message)
        if found is None:
            raise ApiError(400, "BadRequest", error.message) from None
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
        field = f"{path.lstrip('.')}.{found.group(1)}".lstrip(".")
        raise ApiError(
            400, "BadRequest", f'strict decoding error: unknown field "{field}"'
        ) from None


def gv_path(group_version: str) -> str:
    return "api/v1" if group_version == "v1" else f"apis/{group_version}"


def openapi_document(gv: str) -> Obj:
    """A minimal OpenAPI v3 document of a group version: its collection paths, each
    creation and patch declaring the ``fieldValidation`` query parameter (what
    kubectl's validation looks for before it asks the server to validate strictly)."""
    group_version = "v1" if gv == "api/v1" else gv.removeprefix("apis/")
    group, _, version = group_version.rpartition("/")
    parameter = {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
    paths: Obj = {}
    for resource in RESOURCES.get(group_version, []):
        if "/" in resource["name"]:
            continue
        gvk = {"group": group, "version": version, "kind": resource["kind"]}
        base = f"/{gv}/namespaces/{{namespace}}/{resource['name']}"
        if not resource["namespaced"]:
            base = f"/{gv}/{resource['name']}"
        operation = {"parameters": [parameter], "x-kubernetes-group-version-kind": gvk}
        paths[base] = {"post": operation}
        paths[base + "/{name}"] = {"patch": operation, "put": operation}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0-fake"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def discovery_body(path: str) -> Obj | None:
    """The answer to ``GET path`` when it is a discovery path, else None."""
    groups = [g for g in RESOURCES if "/" in g]
    if path == "/version":
        return VERSION
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g.split("/")[0],
                    "versions": [{"groupVersion": g, "version": "v1"}],
                    "preferredVersion": {"groupVersion": g, "version": "v1"},
                }
                for g in groups
            ],
        }
    if path == "/openapi/v3":
        return {
            "paths": {
                gv_path(g): {"serverRelativeURL": f"/openapi/v3/{gv_path(g)}?hash=fake"}
                for g in RESOURCES
            }
        }
    if path.startswith("/openapi/v3/"):
        return openapi_document(path.removeprefix("/openapi/v3/"))
    if path == "/api/v1" or path.removeprefix("/apis/") in groups:
        group_version = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": RESOURCES[group_version],
        }
    return None
