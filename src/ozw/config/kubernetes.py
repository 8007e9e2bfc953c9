"""The rules of the ``[backend.kubernetes]`` table (the table is in the model).

``pod_template`` (inline PodSpec), ``pod_template_file`` (a PodSpec in YAML) and
``preflight_resources`` are checked key by key against the Kubernetes models when
the file is loaded, so a misspelt key stops start-up with its path.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal, TypeAlias

from ozw.config import rules
from ozw.strict import Invalid

KubePullPolicy: TypeAlias = Literal["Always", "Never", "IfNotPresent"]

DEFAULT_NAMESPACE: Final = "default"
DEFAULT_PREFLIGHT_IMAGE: Final = "busybox:1.36"
DEFAULT_TTL_SECONDS: Final = 86_400
DEFAULT_UNSCHEDULABLE_TIMEOUT: Final = 30.0
DEFAULT_CALL_TIMEOUT: Final = 30.0
LABEL_VALUE_RE: Final = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")
"""A Kubernetes label value: at most 63 characters (checked apart), alphanumeric at the ends."""


def _template_check(check: Any, value: object, path: str) -> dict[str, Any]:
    # Imported here: the models (lightkube) load only when a template is configured.
    from ozw.config.pod_spec import TemplateError

    try:
        checked: dict[str, Any] = check(value, path)
    except TemplateError as exc:
        raise Invalid(str(exc).removeprefix(f"{path}.").removeprefix(f"{path}: ")) from None
    return checked


def pod_template(value: object) -> dict[str, Any]:
    from ozw.config.pod_spec import check_pod_spec

    return _template_check(check_pod_spec, value, "pod_template")


def preflight_resources(value: object) -> dict[str, Any]:
    from ozw.config.pod_spec import check_resources

    return _template_check(check_resources, value, "preflight_resources")


def pod_template_file(value: object) -> str | None:
    from ozw.config.pod_spec import TemplateError, load_pod_template_file

    path = rules.optional_text(value)
    if path is not None:
        try:
            load_pod_template_file(path)
        except TemplateError as exc:
            raise Invalid(str(exc)) from None
    return path


def preflight_image(value: object) -> str:
    """An image reference; ``""`` is the default image, as in Go."""
    return rules.image(value) or DEFAULT_PREFLIGHT_IMAGE


def labels(value: object) -> dict[str, str]:
    """A table of label values, each valid for Kubernetes."""
    table = strings(value)
    for key, text in table.items():
        if len(text) > 63 or not LABEL_VALUE_RE.fullmatch(text):
            raise Invalid(f"{key} = {text!r} is not a valid label value")
    return table


def strings(value: object) -> dict[str, str]:
    """A table of strings."""
    if not isinstance(value, dict):
        raise Invalid(f"expected a table, got {rules.toml_kind(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise Invalid(f"{key}: expected a string, got {rules.toml_kind(item)}")
    return dict(value)


def one_template(instance: Any, *_: object) -> None:
    """An attrs validator: at most one of ``pod_template`` and ``pod_template_file``."""
    if instance.pod_template is not None and instance.pod_template_file is not None:
        raise Invalid("set pod_template or pod_template_file, not both")
