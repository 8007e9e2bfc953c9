"""``pod_template`` / ``pod_template_file`` / ``preflight_resources`` are checked at load."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from ozw.backends.kubernetes.manifests import preflight_resources, task_job
from ozw.backends.kubernetes.pod_template import pod_spec_template
from ozw.config import CliOverrides, ConfigError, load_config
from ozw.config.pod_spec import TemplateError, check_pod_spec
from tests.kubernetes.manifest_cases import TEMPLATE, spec
from tests.kubernetes.test_schema import VERSIONS


def test_a_real_template_passes_unchanged() -> None:
    assert check_pod_spec(TEMPLATE) == TEMPLATE


def test_a_template_without_containers_is_fine() -> None:
    assert check_pod_spec({"nodeSelector": {"a": "b"}}) == {"nodeSelector": {"a": "b"}}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"nodeSelecter": {"a": "b"}}, "pod_template.nodeSelecter: unknown key"),
        (
            {"containers": [{"name": "task", "imagePulPolicy": "Always"}]},
            "pod_template.containers[0].imagePulPolicy: unknown key",
        ),
        (
            {"tolerations": [{"key": "a", "efect": "NoSchedule"}]},
            "pod_template.tolerations[0].efect: unknown key",
        ),
        ({"containers": [{"name": "t", "ports": [{"containerPort": "x"}]}]}, "containerPort"),
        ({"containers": [{"image": "x"}]}, "name"),
        ([1, 2], "expected a table"),
    ],
)
def test_mistakes_are_refused_with_their_path(template: object, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_pod_spec(template)
    assert message in str(caught.value)


def _load(tmp_path: Path, table: str) -> object:
    path = tmp_path / "worker.toml"
    path.write_text(f'worker_id = "w"\n[backend.kubernetes]\n{table}\n')
    return load_config(str(path), CliOverrides(), {})


def _refusal(tmp_path: Path, table: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, table)
    return str(caught.value)


def test_config_refuses_a_bad_inline_template(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "pod_template = { hostNetwerk = true }")
    assert "backend.kubernetes.pod_template" in message
    assert "hostNetwerk: unknown key" in message
    assert "\n" not in message


def test_config_takes_a_template(tmp_path: Path) -> None:
    config = _load(
        tmp_path, 'pod_template = { serviceAccountName = "oz", nodeSelector = { pool = "a" } }'
    )
    assert pod_spec_template(config.backend) == {  # type: ignore[attr-defined]
        "serviceAccountName": "oz",
        "nodeSelector": {"pool": "a"},
    }


def test_template_file(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text("serviceAccountName: oz\nnodeSelector:\n  pool: agents\n")
    config = _load(tmp_path, f'pod_template_file = "{path}"')
    expected = {"serviceAccountName": "oz", "nodeSelector": {"pool": "agents"}}
    assert pod_spec_template(config.backend) == expected  # type: ignore[attr-defined]


def test_template_file_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("serviceAcountName: oz\n")
    assert "serviceAcountName: unknown key" in _refusal(tmp_path, f'pod_template_file = "{bad}"')
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [\n")
    assert "not valid YAML" in _refusal(tmp_path, f'pod_template_file = "{broken}"')
    missing = tmp_path / "missing.yaml"
    assert "No such file" in _refusal(tmp_path, f'pod_template_file = "{missing}"')


def test_both_template_forms_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text("{}\n")
    message = _refusal(tmp_path, f'pod_template = {{}}\npod_template_file = "{path}"')
    assert "not both" in message


def test_preflight_resources_are_checked(tmp_path: Path) -> None:
    message = _refusal(tmp_path, 'preflight_resources = { limit = { cpu = "1" } }')
    assert "limit: unknown key" in message
    config = _load(tmp_path, 'preflight_resources = { limits = { cpu = "1" } }')
    assert preflight_resources(config.backend) == {"limits": {"cpu": "1"}}  # type: ignore[attr-defined]


def test_labels_and_durations(tmp_path: Path) -> None:
    assert "not a valid label value" in _refusal(tmp_path, 'extra_labels = { team = "a b" }')
    config = _load(tmp_path, 'unschedulable_timeout = "2m"\nextra_labels = { team = "infra" }')
    assert config.backend.unschedulable_timeout == 120  # type: ignore[attr-defined]
    assert "must be one of" in _refusal(tmp_path, 'image_pull_policy = "always"')


NUMBERS = """
pod_template = { overhead = { cpu = 0.25 }, volumes = [
    { name = "scratch", emptyDir = { sizeLimit = 1073741824 } },
], containers = [{ name = "task", resources = { limits = { cpu = 1, memory = 1024 } }, env = [
    { name = "CPUS", valueFrom = { resourceFieldRef = { resource = "limits.cpu", divisor = 1 } } },
] }] }
preflight_resources = { limits = { cpu = 2.0, memory = 134217728 } }
"""


def test_numbers_are_quantities_written_as_text(tmp_path: Path) -> None:
    config = _load(tmp_path, NUMBERS)
    template = pod_spec_template(config.backend)  # type: ignore[attr-defined]
    assert template["overhead"] == {"cpu": "0.25"}
    assert template["volumes"][0]["emptyDir"] == {"sizeLimit": "1073741824"}
    task = template["containers"][0]
    assert task["resources"] == {"limits": {"cpu": "1", "memory": "1024"}}
    assert task["env"][0]["valueFrom"]["resourceFieldRef"]["divisor"] == "1"
    assert preflight_resources(config.backend) == {  # type: ignore[attr-defined]
        "limits": {"cpu": "2", "memory": "134217728"}
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_a_job_from_a_template_with_numbers_validates(tmp_path: Path, version: str) -> None:
    config = _load(tmp_path, NUMBERS)
    job = task_job(spec(), config.backend)  # type: ignore[attr-defined]
    pod = job["spec"]["template"]["spec"]
    # The shape's requests/limits merge over the template's, which were numbers.
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert pod["overhead"] == {"cpu": "0.25"}
    kubernetes_validate.validate(job, version, strict=True)


@pytest.mark.parametrize("value", ["true", "[1]", "{ a = 1 }"])
def test_a_quantity_that_is_neither_text_nor_a_number_is_refused(
    tmp_path: Path, value: str
) -> None:
    message = _refusal(tmp_path, f"pod_template = {{ overhead = {{ cpu = {value} }} }}")
    assert "overhead.cpu: expected a quantity" in message
