"""Every rendered object validates strictly against several Kubernetes releases' schemas."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import ValidationError

from tests.kubernetes.manifest_cases import rendered

VERSIONS = ("1.28.0", "1.31.0", "1.34.0", "1.37.0")
IMAGE_VOLUMES_SINCE = (1, 31)
"""Image volumes (``volumes[].image``) entered the API in 1.31."""


def _uses_image_volumes(obj: dict[str, Any]) -> bool:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return any("image" in volume for volume in pod.get("volumes", []))


def _cases() -> list[tuple[str, str]]:
    cases = []
    for name, obj in sorted(rendered().items()):
        for version in VERSIONS:
            minor = tuple(int(p) for p in version.split(".")[:2])
            if _uses_image_volumes(obj) and minor < IMAGE_VOLUMES_SINCE:
                continue
            cases.append((name, version))
    return cases


@pytest.mark.parametrize(("name", "version"), _cases())
def test_validates_strictly(name: str, version: str) -> None:
    kubernetes_validate.validate(rendered()[name], version, strict=True)


def test_strict_validation_catches_a_misspelt_key() -> None:
    job = rendered()["job-minimal"]
    job["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(job, "1.37.0", strict=True)


def test_image_volumes_are_refused_before_1_31() -> None:
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(rendered()["job-image-volumes"], "1.30.0", strict=True)
