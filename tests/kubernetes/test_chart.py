"""charts/ozw with a real ``helm`` (built from helm.sh/helm/v4 by .ci/run): it lints,
renders with the Go chart's own values file unchanged and with ozw's, every rendered
object validates, and every key of the Go chart's values changes what is rendered."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ozw.backends.kubernetes.preflight import PERMISSIONS
from ozw.config import CliOverrides, KubernetesConfig, load_config
from tests.kubernetes.real.control_plane import KUBECTL, REPO

HELM_VERSION = "v4.3.2"
HELM = Path(
    os.environ.get("OZW_HELM", f"/root/.cache/ozw-tools/helm-{HELM_VERSION}/helm")
)  # built by .ci/run: GOBIN=... go install helm.sh/helm/v4/cmd/helm@v4.3.2
CHART = REPO / "charts" / "ozw"
GO_VALUES_FILE = REPO / "tests" / "data" / "go_chart_values.yaml"
GO_VALUES: dict[str, Any] = yaml.safe_load(GO_VALUES_FILE.read_text())
REQUIRED = {"worker": {"workerId": "chart-worker"}}
"""What the Go chart requires too (its default workerId is empty)."""
NAMESPACE = "agents"


def helm(*args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--values", "-"] if values is not None else []
    return subprocess.run(
        [str(HELM), *args, *extra],
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for layer in layers:
        result = _merge(result, layer)
    return result


def _merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_text(values: dict[str, Any]) -> str:
    result = helm("template", "r1", str(CHART), "--namespace", NAMESPACE, values=values)
    assert result.returncode == 0, result.stderr
    return result.stdout


@functools.cache
def _render_cached(values_yaml: str) -> tuple[dict[str, Any], ...]:
    text = render_text(yaml.safe_load(values_yaml))
    return tuple(doc for doc in yaml.safe_load_all(text) if doc)


def render(values: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    return _render_cached(yaml.safe_dump(values, sort_keys=True))


def by_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


EVERYTHING_ON = {
    "warp": {"apiKeySecret": {"create": True, "value": "a-key"}},
    "metrics": {"enabled": True, "podMonitor": {"create": True}},
    "kubernetesBackend": {
        "podTemplate": {"nodeSelector": {"pool": "agents"}},
        "preflightResources": {"limits": {"cpu": "100m"}},
        "setupCommand": "echo set\necho up",
    },
}
VALUE_SETS = {
    "ozw-defaults": REQUIRED,
    "go-values": merged(GO_VALUES, REQUIRED),
    "go-values-everything-on": merged(GO_VALUES, REQUIRED, EVERYTHING_ON),
}


def test_helm_is_the_pinned_build() -> None:
    # `go install` leaves `helm version` at "v4.3": the module version is in the binary.
    built = subprocess.run(
        [shutil.which("go") or "/usr/local/go/bin/go", "version", "-m", str(HELM)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"helm.sh/helm/v4\t{HELM_VERSION}" in built


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint(name: str) -> None:
    result = helm("lint", str(CHART), "--strict", values=VALUE_SETS[name])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_objects_validate(name: str) -> None:
    docs = render(VALUE_SETS[name])
    for doc in docs:
        if doc["kind"] != "PodMonitor":  # a CRD: no schema in kubernetes-validate
            kubernetes_validate.validate(doc, "1.37.0", strict=True)
    # kubectl reads every object (offline: client-side, no cluster).
    result = subprocess.run(
        [KUBECTL, "label", "--local", "--dry-run=client", "-o", "name", "-f", "-", "ozw=ok"],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "KUBECONFIG": "/dev/null"},
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == len(docs)


def test_everything_on_renders_the_optional_objects() -> None:
    kinds = sorted(doc["kind"] for doc in render(VALUE_SETS["go-values-everything-on"]))
    assert kinds == [
        "ConfigMap", "Deployment", "PodMonitor", "Role", "RoleBinding", "Secret",
        "Service", "ServiceAccount",
    ]  # fmt: skip


def test_the_role_grants_exactly_what_the_backend_uses() -> None:
    granted = {
        (verb, resource, group)
        for rule in by_kind(render(REQUIRED), "Role")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {
        (verb, f"{resource}/{sub}" if sub else resource, group)
        for verb, resource, group, sub in PERMISSIONS
    }
    assert granted == needed


def chart_config(tmp_path: Path, values: dict[str, Any]) -> tuple[list[str], Path]:
    """The worker's arguments and its config file, as the chart renders them."""
    docs = render(values)
    (container,) = by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    path = tmp_path / "config.yaml"
    path.write_text(by_kind(docs, "ConfigMap")["data"]["config.yaml"])
    args = [str(path) if arg.endswith("/config.yaml") else arg for arg in container["args"]]
    return args, path


def test_the_go_values_give_a_kubernetes_worker_with_the_8_hour_deadline(
    tmp_path: Path,
) -> None:
    from ozw.cli import main as cli
    from ozw.config import overrides_from_args

    args, _ = chart_config(tmp_path, VALUE_SETS["go-values"])
    parsed = cli.build_parser().parse_args(cli.normalise_argv(args))
    config = load_config(parsed.config, overrides_from_args(parsed), {"WARP_API_KEY": "k"})
    assert isinstance(config.backend, KubernetesConfig)
    assert config.backend.namespace == NAMESPACE
    assert config.backend.active_deadline_seconds == 28800
    assert config.backend.ttl_seconds_after_finished == 86400
    assert config.server.websocket_url == GO_VALUES["warp"]["webSocketURL"]
    assert config.metrics_addr == ":9090"
    assert config.warnings == ()


def test_the_deadline_is_overridable(tmp_path: Path) -> None:
    for deadline, expected in ((3600, 3600), (None, None)):
        values = merged(REQUIRED, {"kubernetesBackend": {"activeDeadlineSeconds": deadline}})
        _, path = chart_config(tmp_path, values)
        backend = load_config(str(path), CliOverrides(), {}).backend
        assert isinstance(backend, KubernetesConfig)
        assert backend.active_deadline_seconds == expected


def _leaves(values: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        return [leaf for key, value in values.items() for leaf in _leaves(value, (*path, key))]
    return [path]


def _changed(value: Any) -> Any:
    """Another value of the same kind (an empty list or map gains an entry)."""
    match value:
        case bool():
            return not value
        case int():
            return value + 7
        case str():
            return f"{value}-changed" if value else "changed"
        case list():
            return [{"name": "CHANGED", "value": "x"}]
        case dict():
            return {"changed": "x"}
        case None:
            return 60
    raise AssertionError(value)


# Keys that matter only once another key enables them (as in the Go chart).
ENABLED_BY: dict[tuple[str, ...], dict[str, Any]] = {
    ("warp", "apiKeySecret", "value"): {"warp": {"apiKeySecret": {"create": True, "value": "k"}}},
    ("warp", "apiKeySecret", "create"): {"warp": {"apiKeySecret": {"value": "k"}}},
    ("serviceAccount", "create"): {"serviceAccount": {"name": "an-account"}},
    ("metrics",): {"metrics": {"enabled": True, "podMonitor": {"create": True}}},
}
_SAMPLES: dict[tuple[str, ...], Any] = {
    ("image", "pullSecrets"): [{"name": "registry"}],
    ("worker", "extraArgs"): ["--max-tasks", "5"],
    ("worker", "tolerations"): [{"key": "k", "operator": "Exists"}],
    ("kubernetesBackend", "podTemplate"): {"nodeSelector": {"pool": "x"}},
    ("kubernetesBackend", "preflightResources"): {"limits": {"cpu": "1"}},
    ("kubernetesBackend", "imagePullPolicy"): "Always",
    ("kubernetesBackend", "unschedulableTimeout"): "2m",
    ("worker", "logLevel"): "debug",
    ("metrics", "exporter"): "otlp",
    ("metrics", "service", "type"): "NodePort",
}


LEAVES = _leaves(GO_VALUES)


@pytest.mark.parametrize("path", LEAVES, ids=[".".join(leaf) for leaf in LEAVES])
def test_every_go_values_key_is_consumed(path: tuple[str, ...]) -> None:
    key = ".".join(path)
    base = merged(GO_VALUES, REQUIRED)
    for prefix, enabling in ENABLED_BY.items():
        if path[: len(prefix)] == prefix:
            base = merged(base, enabling)
    value: Any = base
    for part in path:
        value = value[part]
    new = _SAMPLES.get(path, _changed(value))
    change: Any = new
    for part in reversed(path):
        change = {part: change}
    assert render_text(merged(base, change)) != render_text(base), f"{key} changes nothing"


def test_prometheus_metrics_are_served_once_on_the_metrics_port(tmp_path: Path) -> None:
    from ozw.cli import main as cli
    from ozw.config import overrides_from_args
    from ozw.telemetry.otel_env import read_plan

    values = merged(VALUE_SETS["go-values"], {"metrics": {"enabled": True}})
    docs = render(values)
    (container,) = by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    plan = read_plan({k: v for k, v in env.items() if v is not None})
    args, _ = chart_config(tmp_path, values)
    parsed = cli.build_parser().parse_args(cli.normalise_argv(args))
    config = load_config(parsed.config, overrides_from_args(parsed), {"WARP_API_KEY": "k"})
    # One listener: the OTEL_* variables' Prometheus endpoint, which serves /healthz too.
    assert config.metrics_addr is None
    assert (plan.metrics, plan.prometheus_address) == ("prometheus", "0.0.0.0:9464")
    assert container["readinessProbe"]["httpGet"]["port"] == 9464
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
