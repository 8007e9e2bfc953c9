"""``ozw config import`` and the Go worker's flags, through the real ``ozw`` command."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from ozw.config import (
    CliOverrides,
    CommandConfig,
    DirectConfig,
    DockerConfig,
    EnvEntry,
    KubernetesConfig,
    WorkerConfig,
    load_config,
)
from ozw.config.go_import import GO_BACKEND_KEYS, GO_TOP_KEYS
from tests.support.ozw_command import one_error_line, run_ozw


def convert(tmp_path: Path, yaml_text: str) -> tuple[str, Path]:
    """Import ``yaml_text`` with ``ozw config import --output``; the TOML text and its path."""
    source = tmp_path / "config.yaml"
    source.write_text(yaml_text)
    output = tmp_path / "worker.toml"
    result = run_ozw("config", "import", str(source), "--output", str(output), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"wrote {output}" in result.stderr
    return output.read_text(), output


def test_docker_config_converts_to_an_equivalent_file(tmp_path: Path) -> None:
    text, output = convert(
        tmp_path,
        """\
worker_id: "my-worker"
cleanup: false
max_concurrent_tasks: 3
idle_on_complete: "1h 30m"
backend:
  docker:
    volumes:
      - /srv/cache:/cache:ro
    environment:
      - name: ANSWER
        value: yes
      - name: PORT
        value: 8080
      - name: FROM_HOST
""",
    )
    assert load_config(str(output), CliOverrides(), {}) == WorkerConfig(
        worker_id="my-worker",
        cleanup=False,
        max_concurrent_tasks=3,
        idle_on_complete="1h 30m",
        backend=DockerConfig(
            volumes=("/srv/cache:/cache:ro",),
            # Go decodes any scalar into a string field as written: `yes` stays "yes".
            environment=(
                EnvEntry("ANSWER", "yes"),
                EnvEntry("PORT", "8080"),
                EnvEntry("FROM_HOST"),
            ),
        ),
    )
    assert "# note: an environment entry without value inherits" in text


def test_direct_config_converts(tmp_path: Path) -> None:
    _, output = convert(
        tmp_path,
        """\
worker_id: w
backend:
  direct:
    workspace_root: /var/lib/oz/ws
    target_dir: /srv/checkout
    oz_path: /usr/local/bin/oz
    setup_command: ./provision.sh
    teardown_command: ./cleanup.sh
    environment: [{name: A, value: "1"}]
""",
    )
    assert load_config(str(output), CliOverrides(), {}).backend == DirectConfig(
        workspace_root="/var/lib/oz/ws",
        target_dir="/srv/checkout",
        oz_path="/usr/local/bin/oz",
        setup_command="./provision.sh",
        teardown_command="./cleanup.sh",
        environment=(EnvEntry("A", "1"),),
    )


def test_command_config_converts(tmp_path: Path) -> None:
    _, output = convert(
        tmp_path,
        """\
worker_id: w
backend:
  command:
    dispatch_command: /opt/oz/dispatch.sh
    cancel_command: /opt/oz/cancel.sh
    dispatch_timeout: 1m30s
    environment:
      - name: MY_RUNTIME_TOKEN
""",
    )
    assert load_config(str(output), CliOverrides(), {}).backend == CommandConfig(
        dispatch_command="/opt/oz/dispatch.sh",
        cancel_command="/opt/oz/cancel.sh",
        dispatch_timeout=90.0,
        environment=(EnvEntry("MY_RUNTIME_TOKEN"),),
    )


KUBERNETES_YAML = """\
worker_id: k8s-worker
backend:
  kubernetes:
    namespace: agents
    kubeconfig: /path/to/kubeconfig
    default_image: my-registry.io/dev-image:latest
    image_pull_policy: Always
    use_image_volumes: yes
    preflight_image: registry.internal/busybox:1.36
    sidecar_image: registry.internal/warp-agent:latest
    setup_command: ./setup.sh
    teardown_command: ./teardown.sh
    extra_labels: {team: infra, on: yes}
    extra_annotations: {owner: ops}
    active_deadline_seconds: 7200
    ttl_seconds_after_finished: 3600
    workspace_size_limit: 10Gi
    unschedulable_timeout: 2m
    coding_cli_sidecars:
      claude: registry.internal/my-claude-wrapper:v1
    pod_template:
      nodeSelector:
        kubernetes.io/os: linux
      priorityClassName: ~
      securityContext: {runAsUser: 1000, runAsNonRoot: true}
      containers:
        - name: task
          resources:
            requests: {cpu: "2", memory: 4Gi}
    preflight_resources:
      limits: {cpu: 100m, memory: 64Mi}
"""


def test_kubernetes_config_keeps_every_key(tmp_path: Path) -> None:
    text, output = convert(tmp_path, KUBERNETES_YAML)
    table = tomllib.loads(text)["backend"]["kubernetes"]
    assert set(table) == set(GO_BACKEND_KEYS["kubernetes"])
    assert table["use_image_volumes"] is True
    assert table["active_deadline_seconds"] == 7200
    assert table["unschedulable_timeout"] == "2m"
    # Label values are text in Go (map[string]string), whatever YAML 1.1 thinks of `yes`.
    assert table["extra_labels"] == {"team": "infra", "on": "yes"}
    # A PodSpec keeps its types: numbers stay numbers, quoted ones stay text.
    assert table["pod_template"] == {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "securityContext": {"runAsUser": 1000, "runAsNonRoot": True},
        "containers": [{"name": "task", "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}],
    }
    assert table["preflight_resources"] == {"limits": {"cpu": "100m", "memory": "64Mi"}}
    # And ozw reads it as the same Kubernetes backend.
    assert load_config(str(output), CliOverrides(), {}).backend == KubernetesConfig(
        namespace="agents",
        kubeconfig="/path/to/kubeconfig",
        default_image="my-registry.io/dev-image:latest",
        image_pull_policy="Always",
        use_image_volumes=True,
        preflight_image="registry.internal/busybox:1.36",
        sidecar_image="registry.internal/warp-agent:latest",
        setup_command="./setup.sh",
        teardown_command="./teardown.sh",
        extra_labels={"team": "infra", "on": "yes"},
        extra_annotations={"owner": "ops"},
        active_deadline_seconds=7200,
        ttl_seconds_after_finished=3600,
        workspace_size_limit="10Gi",
        unschedulable_timeout=120.0,
        coding_cli_sidecars={"claude": "registry.internal/my-claude-wrapper:v1"},
        pod_template=table["pod_template"],
        preflight_resources=table["preflight_resources"],
    )
    assert (
        "# not converted (TOML has no null; left out): pod_template.priorityClassName = null"
        in text
    )


@pytest.mark.parametrize("backend", GO_BACKEND_KEYS)
def test_every_go_key_is_carried_over(tmp_path: Path, backend: str) -> None:
    """A key of the Go worker's FileConfig is never left as a comment."""
    keys = GO_BACKEND_KEYS[backend]
    lines = [f"{key}: {_sample(key)}" for key in GO_TOP_KEYS]
    lines += ["backend:", f"  {backend}:", *(f"    {key}: {_sample(key)}" for key in keys)]
    text, _ = convert(tmp_path, "\n".join(lines) + "\n")
    assert "not converted" not in text, text
    document = tomllib.loads(text)
    assert set(document) == {*GO_TOP_KEYS, "backend"}
    assert set(document["backend"][backend]) == set(keys)


def _sample(key: str) -> str:
    samples: dict[str, Any] = {
        "cleanup": "true",
        "use_image_volumes": "false",
        "max_concurrent_tasks": "2",
        "active_deadline_seconds": "60",
        "ttl_seconds_after_finished": "60",
        "idle_on_complete": "45m",
        "dispatch_timeout": "60s",
        "image_pull_policy": "IfNotPresent",
        "unschedulable_timeout": "2m",
        "volumes": "[/a:/a]",
        "environment": "[{name: A}]",
        "pod_template": "{containers: []}",
        "preflight_resources": "{limits: {cpu: 100m}}",
    }
    if key.startswith(("extra_", "coding_cli")):
        return "{a: b}"
    return str(samples.get(key, "some-value"))


def test_unknown_keys_become_comments(tmp_path: Path) -> None:
    text, output = convert(
        tmp_path, "worker_id: w\nfuture_option: 3\nbackend:\n  docker:\n    gpus: all\n"
    )
    assert (
        '# not converted (unknown key; the Go worker refuses it too): future_option = "3"' in text
    )
    assert '# not converted (unknown key; the Go worker refuses it too): gpus = "all"' in text
    assert load_config(str(output), CliOverrides(), {}) == WorkerConfig(worker_id="w")


def test_log_level_is_converted_and_the_go_refusal_said(tmp_path: Path) -> None:
    text, output = convert(tmp_path, "worker_id: w\nlog_level: warn\n")
    assert 'log_level = "warning"' in text
    assert "# note: log_level converted, but the Go worker refuses this key in its file" in text
    assert load_config(str(output), CliOverrides(), {}).log_level == "warning"


def test_without_worker_id_the_file_says_where_to_set_it(tmp_path: Path) -> None:
    text, _ = convert(tmp_path, "max_concurrent_tasks: 1\n")
    assert "# worker_id = " in text
    assert tomllib.loads(text) == {"max_concurrent_tasks": 1}


def test_import_to_stdout(tmp_path: Path) -> None:
    source = tmp_path / "c.yaml"
    source.write_text("worker_id: w\n")
    result = run_ozw("config", "import", str(source), cwd=tmp_path)
    assert result.returncode == 0
    assert tomllib.loads(result.stdout) == {"worker_id": "w"}


def test_import_keeps_an_existing_file(tmp_path: Path) -> None:
    source = tmp_path / "c.yaml"
    source.write_text("worker_id: w\n")
    output = tmp_path / "out.toml"
    output.write_text("mine\n")
    result = run_ozw("config", "import", str(source), "-o", str(output), cwd=tmp_path)
    assert result.returncode == 2
    assert "--force" in one_error_line(result.stderr)
    assert output.read_text() == "mine\n"
    forced = run_ozw("config", "import", str(source), "-o", str(output), "--force", cwd=tmp_path)
    assert forced.returncode == 0
    assert tomllib.loads(output.read_text()) == {"worker_id": "w"}


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        pytest.param("worker_id: [\n", "invalid YAML: line 2: ", id="syntax"),
        pytest.param("- a\n- b\n", "the file: expected a mapping, got a list", id="not-mapping"),
        pytest.param(
            "max_concurrent_tasks: many\n",
            "max_concurrent_tasks: expected an integer, got 'many'",
            id="int",
        ),
        pytest.param("cleanup: maybe\n", "cleanup: expected true or false", id="bool"),
        pytest.param(
            "backend:\n  docker: {}\n  direct: {}\n",
            "backend: at most one backend may be configured, found docker, direct",
            id="two-backends",
        ),
        pytest.param("backend:\n  podman: {}\n", "backend.podman: unknown backend", id="backend"),
        pytest.param(
            "backend:\n  docker:\n    volumes: /a:/b\n",
            "backend.docker.volumes: expected a list, got '/a:/b'",
            id="volumes",
        ),
        pytest.param("backend: 5\n", "backend: expected a mapping, got '5'", id="scalar"),
        pytest.param(
            "backend:\n  direct:\n    environment: [{name: A B, value: x}]\n",
            "backend.direct.environment[0].name: 'A B' must not contain whitespace "
            "(the Go worker refuses it too)",
            id="env-name-space",
        ),
        pytest.param(
            "backend:\n  docker:\n    environment: [{value: x}]\n",
            "backend.docker.environment[0].name: expected a string, got null",
            id="env-name-missing",
        ),
        pytest.param(
            "backend:\n  kubernetes:\n    sidecar_image: 'a\tb'\n",
            "backend.kubernetes.sidecar_image: 'a\\tb' must not contain whitespace",
            id="image-space",
        ),
        pytest.param(
            "backend:\n  kubernetes:\n    image_pull_policy: Sometimes\n",
            "backend.kubernetes.image_pull_policy: expected one of Always, Never, IfNotPresent, "
            "got 'Sometimes' (the Go worker refuses it too)",
            id="pull-policy",
        ),
        pytest.param(
            "backend:\n  command:\n    cancel_command: x\n",
            "backend.command.dispatch_command: required (the Go worker refuses it too)",
            id="dispatch-required",
        ),
        pytest.param("log_level: loud\n", "log_level: expected one of debug", id="log-level"),
        pytest.param(
            "backend:\n  direct:\n    environment: [{name: A, val: x}]\n",
            "backend.direct.environment[0].val: unknown key",
            id="env-key",
        ),
    ],
)
def test_import_refusals_are_one_line(tmp_path: Path, yaml_text: str, expected: str) -> None:
    source = tmp_path / "c.yaml"
    source.write_text(yaml_text)
    result = run_ozw("config", "import", str(source), cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result.stderr).startswith(f"ozw: error: {source}: {expected}")
    assert result.stdout == ""


def test_import_of_a_missing_file(tmp_path: Path) -> None:
    result = run_ozw("config", "import", "absent.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result.stderr) == "ozw: error: absent.yaml: no such file"


# --------------------------------------------------------------------------- Go's flags


def show(tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``ozw config show FLAGS`` as a TOML document."""
    result = run_ozw("config", "show", *flags, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    return tomllib.loads(result.stdout)


def test_go_flags_keep_working(tmp_path: Path) -> None:
    config = tmp_path / "w.toml"
    config.write_text('worker_id = "w"\n')
    shown = show(
        tmp_path,
        "--config-file", str(config),
        "--volumes", "/a:/a", "-v", "/b:/b:ro",
        "-e", "FROM_HOST", "-e", "SET=v=1",
        "--log-level", "warn",
        "--cleanup=false",
        "--idle-on-complete", "2d",
        "--session-sharing-server-url", "http://127.0.0.1:8081",
    )  # fmt: skip
    assert shown["log_level"] == "warning"
    assert shown["cleanup"] is False
    assert shown["idle_on_complete"] == "2d"
    assert shown["server"]["session_sharing_server_url"] == "http://127.0.0.1:8081"
    docker = shown["backend"]["docker"]
    assert docker["volumes"] == ["/a:/a", "/b:/b:ro"]
    assert docker["environment"] == [{"name": "FROM_HOST"}, {"name": "SET", "value": "v=1"}]


@pytest.mark.parametrize(
    ("flag", "cleanup"),
    [("--cleanup", True), ("--cleanup=true", True), ("--cleanup=false", False),
     ("--no-cleanup", False)],
)  # fmt: skip
def test_cleanup_flag_forms(tmp_path: Path, flag: str, cleanup: bool) -> None:
    config = tmp_path / "w.toml"
    config.write_text('worker_id = "w"\ncleanup = false\n' if cleanup else 'worker_id = "w"\n')
    assert show(tmp_path, "--config", str(config), flag)["cleanup"] is cleanup


@pytest.mark.parametrize("idle", ["2d", "1h 30m", "45m", "1h30m0s"])
def test_idle_on_complete_takes_what_go_passes_through(tmp_path: Path, idle: str) -> None:
    assert (
        show(tmp_path, "--worker-id", "w", "--idle-on-complete", idle)["idle_on_complete"] == idle
    )


def test_bad_cleanup_value_is_one_line(tmp_path: Path) -> None:
    result = run_ozw("config", "show", "--worker-id", "w", "--cleanup=maybe", cwd=tmp_path)
    assert result.returncode == 2
    assert "--cleanup" in result.stderr
    assert "Traceback" not in result.stderr
