"""Environment rules shared by the backends: configured entries and valid variables."""

from __future__ import annotations

from collections.abc import Mapping

from ozw.config import resolve_environment as configured_environment

__all__ = ["configured_environment", "invalid_variables"]


def invalid_variables(env: Mapping[str, str]) -> list[str]:
    """Names no process can receive (``execve`` would refuse the whole environment)."""
    return [
        name
        for name, value in env.items()
        if not name or "=" in name or "\0" in name or "\0" in value
    ]
