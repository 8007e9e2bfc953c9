"""The two workers a scenario can drive, and how each is told the same thing.

The Go worker (``oz-agent-worker``) reads flags and a YAML file and serves
Prometheus through OpenTelemetry's environment; ozw reads flags and a TOML file
and serves ``/metrics`` at ``--metrics-addr``. A scenario states its settings
once (:class:`Settings`); :func:`launch` renders them for either worker.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

import attrs

from tests.support.worker import API_KEY

REPO: Final = Path(__file__).resolve().parents[2]
STANDIN_AGENT: Final = REPO / "examples" / "agent" / "oz"
WORKER_ID: Final = "conformance-worker"

Kind = Literal["go", "ozw"]


@attrs.frozen
class Worker:
    """A worker binary: the Go worker's executable, or the ``ozw`` command."""

    kind: Kind
    binary: Path


def ozw_worker() -> Worker:
    """The ``ozw`` entry point installed beside this interpreter."""
    return Worker("ozw", Path(sys.executable).with_name("ozw"))


@attrs.frozen
class Settings:
    """What a scenario configures, in neither worker's syntax."""

    backend: Literal["direct", "command", "docker"] = "direct"
    max_concurrent_tasks: int = 0
    setup_command: str | None = None
    teardown_command: str | None = None
    environment: Mapping[str, str] = attrs.field(factory=dict)
    dispatch_command: str | None = None
    cancel_command: str | None = None
    volumes: tuple[str, ...] = ()
    task_timeout: str | None = None
    """ozw only: the Go worker has no such setting."""
    oz_path: str = str(STANDIN_AGENT)
    """The direct backend's agent (bench/peer.py gives a lighter one)."""


@attrs.frozen
class Launch:
    argv: list[str]
    env: dict[str, str]
    config: str
    config_name: str


def launch(
    worker: Worker,
    settings: Settings,
    *,
    url: str,
    root_url: str,
    workspace_root: Path,
    metrics_port: int,
    base_env: Mapping[str, str],
) -> Launch:
    """The argv, environment and configuration file text that start ``worker``."""
    # Both get OpenTelemetry's variables: they reach the hooks of a worker that passes
    # its environment on, and ozw may honour them as the Go worker does.
    env = {
        **base_env,
        "WARP_API_KEY": API_KEY,
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        "OTEL_TRACES_EXPORTER": "none",
    }
    common = ["--worker-id", WORKER_ID, "--server-root-url", root_url]
    common += ["--backend", settings.backend]
    if settings.max_concurrent_tasks:
        common += ["--max-concurrent-tasks", str(settings.max_concurrent_tasks)]
    for volume in settings.volumes:
        common += ["-v", volume]
    if worker.kind == "go":
        argv = [str(worker.binary), "--config-file", "{config}", "--web-socket-url", url]
        return Launch(argv + common, env, _go_yaml(settings, workspace_root), "worker.yaml")
    argv = [str(worker.binary), "run", "--config", "{config}", "--websocket-url", url]
    argv += ["--metrics-addr", f"127.0.0.1:{metrics_port}"]
    if settings.task_timeout:
        argv += ["--task-timeout", settings.task_timeout]
    return Launch(argv + common, env, _ozw_toml(settings, workspace_root), "worker.toml")


def _backend_keys(settings: Settings, workspace_root: Path) -> dict[str, str]:
    keys: dict[str, str | None] = {}
    if settings.backend == "direct":
        keys = {
            "workspace_root": str(workspace_root),
            "oz_path": settings.oz_path,
            "setup_command": settings.setup_command,
            "teardown_command": settings.teardown_command,
        }
    elif settings.backend == "docker":
        keys = {}
    elif settings.backend == "command":
        keys = {
            "dispatch_command": settings.dispatch_command,
            "cancel_command": settings.cancel_command,
        }
    return {key: value for key, value in keys.items() if value is not None}


def _go_yaml(settings: Settings, workspace_root: Path) -> str:
    # JSON is YAML: no YAML writer needed for a file only the Go worker reads.
    backend: dict[str, object] = dict(_backend_keys(settings, workspace_root))
    if settings.environment:
        backend["environment"] = [
            {"name": name, "value": value} for name, value in settings.environment.items()
        ]
    document = {"worker_id": WORKER_ID, "backend": {settings.backend: backend}}
    return json.dumps(document, indent=2)


def _ozw_toml(settings: Settings, workspace_root: Path) -> str:
    # JSON strings are TOML basic strings for the plain text scenarios use.
    lines = [f"worker_id = {json.dumps(WORKER_ID)}", "", f"[backend.{settings.backend}]"]
    for key, value in _backend_keys(settings, workspace_root).items():
        lines.append(f"{key} = {json.dumps(value)}")
    if settings.environment:
        entries = ", ".join(
            f"{{ name = {json.dumps(name)}, value = {json.dumps(value)} }}"
            for name, value in settings.environment.items()
        )
        lines.append(f"environment = [{entries}]")
    return "\n".join(lines) + "\n"
