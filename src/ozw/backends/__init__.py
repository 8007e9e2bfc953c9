"""Backends run tasks: in a container, on the host, or by handing them off."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ozw.tasks.failures import BackendUnavailable

if TYPE_CHECKING:
    from ozw.backends.base import Backend, WorkerSettings
    from ozw.config import WorkerConfig


def create_backend(config: WorkerConfig) -> Backend:
    """The backend the configuration selects (imported lazily: each pulls its own deps)."""
    from ozw.config import CommandConfig, DirectConfig, DockerConfig, KubernetesConfig

    settings: WorkerSettings = {"worker_id": config.worker_id, "cleanup": config.cleanup}
    match config.backend:
        case DirectConfig():
            from ozw.backends.direct import DirectBackend

            return DirectBackend(config.backend, **settings)
        case CommandConfig():
            from ozw.backends.command.backend import CommandBackend

            return CommandBackend(config.backend, **settings)
        case DockerConfig():
            from ozw.backends.docker import DockerBackend

            return DockerBackend(config.backend, **settings)
        case KubernetesConfig():
            from ozw.backends.kubernetes.backend import KubernetesBackend

            return KubernetesBackend(config.backend, **settings)
    raise BackendUnavailable(f"unknown backend {config.backend!r}")
