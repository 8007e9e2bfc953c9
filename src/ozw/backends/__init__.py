"""Backends run tasks: in a container, on the host, or by handing them off."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ozw.tasks.failures import BackendUnavailable

if TYPE_CHECKING:
    from ozw.backends.base import Backend
    from ozw.config import WorkerConfig


def create_backend(config: WorkerConfig) -> Backend:
    """The backend the configuration selects (imported lazily: each pulls its own deps)."""
    from ozw.config import CommandConfig, DirectConfig, DockerConfig, KubernetesConfig

    match config.backend:
        case DirectConfig():
            from ozw.backends.direct import DirectBackend

            return DirectBackend(config.backend, cleanup=config.cleanup)
        case CommandConfig():
            from ozw.backends.command.backend import CommandBackend

            return CommandBackend(config.backend, worker_id=config.worker_id)
        case DockerConfig():
            from ozw.backends.docker import DockerBackend

            return DockerBackend(config.backend, worker_id=config.worker_id, cleanup=config.cleanup)
        case KubernetesConfig():
            from ozw.backends.kubernetes.backend import KubernetesBackend

            return KubernetesBackend(
                config.backend, worker_id=config.worker_id, cleanup=config.cleanup
            )
    raise BackendUnavailable(f"unknown backend {config.backend!r}")
