"""Environment rules shared by the backends: configured entries and valid variables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ozw.config import EnvEntry


def configured_environment(
    entries: Iterable[EnvEntry], environ: Mapping[str, str]
) -> dict[str, str]:
    """A backend's ``environment`` entries; one without a value inherits ``environ``'s
    variable and is left out when ``environ`` has none. Later entries win."""
    result: dict[str, str] = {}
    for entry in entries:
        if entry.value is not None:
            result[entry.name] = entry.value
        elif entry.name in environ:
            result[entry.name] = environ[entry.name]
    return result


def invalid_variables(env: Mapping[str, str]) -> list[str]:
    """Names no process can receive (``execve`` would refuse the whole environment)."""
    return [
        name
        for name, value in env.items()
        if not name or "=" in name or "\0" in name or "\0" in value
    ]
