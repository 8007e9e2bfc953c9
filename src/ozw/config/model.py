"""The configuration model as attrs classes, each field with its rule.

Durations are seconds in the model and text such as ``"90s"`` in the file. A field
whose rule is more than its type names it in ``metadata=rule(...)`` right here, so
reading a field tells all there is to know about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, TypeAlias, get_args

import attrs

from ozw.config import kubernetes as kube
from ozw.config import rules
from ozw.config.durations import format_duration
from ozw.config.rules import DURATION, POSITIVE_DURATION, rule

DEFAULT_WEBSOCKET_URL: Final = "wss://oz.warp.dev/api/v1/selfhosted/worker/ws"
DEFAULT_ROOT_URL: Final = "https://app.warp.dev"
DEFAULT_WORKSPACE_ROOT: Final = "/var/lib/oz/workspaces"
API_KEY_ENV: Final = "WARP_API_KEY"

BackendName: TypeAlias = Literal["docker", "direct", "command", "kubernetes"]
PullPolicy: TypeAlias = Literal["always", "if-not-present", "never"]
LogFormat: TypeAlias = Literal["human", "json"]
LogLevel: TypeAlias = Literal["debug", "info", "warning", "error"]

BACKEND_NAMES: Final[tuple[BackendName, ...]] = get_args(BackendName)


@attrs.frozen
class EnvEntry:
    """A configured environment variable; no ``value`` means: inherit the worker's own."""

    name: str = attrs.field(metadata=rule(rules.env_name))
    value: str | None = None


@attrs.frozen
class ServerConfig:
    websocket_url: str = attrs.field(
        default=DEFAULT_WEBSOCKET_URL, metadata=rule(rules.url(rules.WS_SCHEMES))
    )
    root_url: str = attrs.field(
        default=DEFAULT_ROOT_URL, metadata=rule(rules.url(rules.HTTP_SCHEMES))
    )
    session_sharing_server_url: str | None = attrs.field(
        default=None, metadata=rule(rules.optional_url(rules.WS_SCHEMES + rules.HTTP_SCHEMES))
    )
    proxy_url: str | None = attrs.field(
        default=None, repr=False, metadata=rule(rules.proxy_url, rules.redact_url)
    )
    """An http:// proxy to dial the server through; may hold credentials, never shown."""


@attrs.frozen
class DockerConfig:
    volumes: tuple[str, ...] = ()
    default_image: str | None = attrs.field(default=None, metadata=rule(rules.image))
    environment: tuple[EnvEntry, ...] = ()
    pull_policy: PullPolicy = "always"
    kill_grace: float = attrs.field(default=10.0, metadata=DURATION)


@attrs.frozen
class DirectConfig:
    workspace_root: str = attrs.field(
        default=DEFAULT_WORKSPACE_ROOT, metadata=rule(rules.required_text)
    )
    oz_path: str | None = attrs.field(default=None, metadata=rule(rules.optional_text))
    target_dir: str | None = attrs.field(default=None, metadata=rule(rules.optional_text))
    setup_command: str | None = attrs.field(default=None, metadata=rule(rules.optional_text))
    teardown_command: str | None = attrs.field(default=None, metadata=rule(rules.optional_text))
    environment: tuple[EnvEntry, ...] = ()
    setup_timeout: float = attrs.field(default=600.0, metadata=POSITIVE_DURATION)
    teardown_timeout: float = attrs.field(default=300.0, metadata=POSITIVE_DURATION)
    kill_grace: float = attrs.field(default=10.0, metadata=DURATION)


@attrs.frozen
class CommandConfig:
    dispatch_command: str = attrs.field(metadata=rule(rules.required_text))
    cancel_command: str | None = attrs.field(default=None, metadata=rule(rules.optional_text))
    dispatch_timeout: float = attrs.field(
        default=60.0, metadata=rule(rules.dispatch_timeout, format_duration)
    )
    environment: tuple[EnvEntry, ...] = ()
    kill_grace: float = attrs.field(default=10.0, metadata=DURATION)


@attrs.frozen
class KubernetesConfig:
    """``[backend.kubernetes]``: docs/protocol.md's keys (durations as ozw strings), plus
    ozw's own ``context``, ``pod_template_file``, ``preflight``, ``reattach``, ``call_timeout``."""

    namespace: str = attrs.field(default=kube.DEFAULT_NAMESPACE, metadata=rule(rules.required_text))
    kubeconfig: str | None = attrs.field(default=None, metadata=rule(rules.optional_text))
    """A kubeconfig file; unset: in-cluster, then ``$KUBECONFIG``, then ``~/.kube/config``."""
    context: str | None = attrs.field(default=None, metadata=rule(rules.optional_text))
    """The kubeconfig context (default: its current context)."""
    default_image: str | None = attrs.field(default=None, metadata=rule(rules.image))
    image_pull_policy: kube.KubePullPolicy = "IfNotPresent"
    use_image_volumes: bool = False
    preflight_image: str = attrs.field(
        default=kube.DEFAULT_PREFLIGHT_IMAGE, metadata=rule(kube.preflight_image)
    )
    sidecar_image: str | None = attrs.field(default=None, metadata=rule(rules.image))
    setup_command: str | None = attrs.field(default=None, metadata=rule(rules.optional_text))
    teardown_command: str | None = attrs.field(default=None, metadata=rule(rules.optional_text))
    extra_labels: dict[str, str] = attrs.field(factory=dict, metadata=rule(kube.labels))
    extra_annotations: dict[str, str] = attrs.field(factory=dict, metadata=rule(kube.strings))
    active_deadline_seconds: int | None = attrs.field(
        default=None, metadata=rule(rules.at_least(1))
    )
    ttl_seconds_after_finished: int | None = attrs.field(
        default=None, metadata=rule(rules.at_least(0))
    )
    """Unset: 86400 (a day); always left out when cleanup is off."""
    workspace_size_limit: str | None = attrs.field(default=None, metadata=rule(rules.optional_text))
    unschedulable_timeout: float = attrs.field(
        default=kube.DEFAULT_UNSCHEDULABLE_TIMEOUT, metadata=DURATION
    )
    """How long a pod may stay unschedulable before the task fails; 0 disables."""
    coding_cli_sidecars: dict[str, str] = attrs.field(factory=dict, metadata=rule(kube.strings))
    pod_template: dict[str, Any] | None = attrs.field(
        default=None, metadata=rule(kube.pod_template)
    )
    pod_template_file: str | None = attrs.field(
        default=None, validator=kube.one_template, metadata=rule(kube.pod_template_file)
    )
    preflight_resources: dict[str, Any] | None = attrs.field(
        default=None, metadata=rule(kube.preflight_resources)
    )
    environment: tuple[EnvEntry, ...] = ()
    preflight: bool = True
    """Run the preflight Job at start-up."""
    reattach: bool = True
    """At start-up adopt this worker's running Jobs (and report finished unreported ones);
    at shutdown leave running Jobs alone and report nothing for them."""
    call_timeout: float = attrs.field(default=kube.DEFAULT_CALL_TIMEOUT, metadata=POSITIVE_DURATION)
    """Bound of each Kubernetes API call."""


BackendConfig: TypeAlias = DockerConfig | DirectConfig | CommandConfig | KubernetesConfig

BACKEND_CLASSES: Final[dict[BackendName, type[BackendConfig]]] = {
    "docker": DockerConfig,
    "direct": DirectConfig,
    "command": CommandConfig,
    "kubernetes": KubernetesConfig,
}


@attrs.frozen
class WorkerConfig:
    """The effective configuration of one worker (file merged with flags).

    ``api_key`` never comes from the file: only ``--api-key`` or ``WARP_API_KEY``.
    Durations are seconds (the file writes them as ``"60s"``, ``"45m"``, ``"1h30m"``).
    """

    worker_id: str = attrs.field(metadata=rule(rules.worker_id))
    backend: BackendConfig = attrs.field(factory=DockerConfig)
    """In the file: exactly one ``[backend.<name>]`` table (none = docker)."""
    server: ServerConfig = attrs.field(factory=ServerConfig)
    max_concurrent_tasks: int = attrs.field(
        default=0, metadata=rule(rules.at_least(0, " (0 means unlimited)"))
    )
    cleanup: bool = True
    idle_on_complete: str | None = attrs.field(default=None, metadata=rule(rules.optional_text))
    """Passed to the agent as written (Go does too); a warning when ozw cannot read it."""
    task_timeout: float | None = attrs.field(default=None, metadata=POSITIVE_DURATION)
    shutdown_grace: float = attrs.field(default=30.0, metadata=DURATION)
    log_level: LogLevel = "info"
    log_format: LogFormat = "human"
    metrics_addr: str | None = attrs.field(default=None, metadata=rule(rules.address))
    max_tasks: int | None = attrs.field(default=None, metadata=rule(rules.at_least(1)))
    """Exit after this many tasks finished (one-shot and CI workers); None = never."""
    api_key: str | None = attrs.field(default=None, repr=False)
    warnings: tuple[str, ...] = attrs.field(default=(), eq=False, repr=False)
    """What loading accepted with Go's meaning but would say about (never in the file)."""

    @property
    def backend_name(self) -> BackendName:
        return backend_name(self.backend)


def backend_name(backend: BackendConfig) -> BackendName:
    """The name of ``backend``'s table in the file."""
    match backend:
        case DockerConfig():
            return "docker"
        case DirectConfig():
            return "direct"
        case CommandConfig():
            return "command"
        case KubernetesConfig():
            return "kubernetes"


def resolve_environment(entries: Iterable[EnvEntry], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables ``entries`` define: a value sets, no value inherits from ``environ``.

    An inherited name missing from ``environ`` is skipped (not set to ``""``), so the
    agent can tell "unset" from "empty". Later entries of the same name win.
    """
    result: dict[str, str] = {}
    for entry in entries:
        if entry.value is not None:
            result[entry.name] = entry.value
        elif entry.name in environ:
            result[entry.name] = environ[entry.name]
    return result


def parse_env_flag(text: str) -> EnvEntry:
    """``KEY`` (inherit) or ``KEY=VALUE`` (set) from ``-e/--env``; the name is checked later."""
    name, sep, value = text.partition("=")
    return EnvEntry(name, value if sep else None)
