"""``ozw check``: validate a configuration and the backend's prerequisites.

One line per check (``ok`` / ``FAIL``), non-zero exit on any failure. The API key
is reported as present or missing, never printed.
"""

from __future__ import annotations

import functools
import sys
import urllib.parse
from collections.abc import Iterator
from typing import IO

import attrs
import trio

from ozw.backends import create_backend
from ozw.config import WorkerConfig
from ozw.failures import BackendUnavailable


@attrs.frozen
class Check:
    name: str
    ok: bool
    detail: str


def url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """Why ``url`` is not a usable URL with one of ``schemes`` (None when it is)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in schemes:
        return f"scheme must be {' or '.join(schemes)}, not {parts.scheme or 'missing'!r}"
    if not parts.hostname:
        return "no host"
    return None


def static_checks(config: WorkerConfig) -> Iterator[Check]:
    """The checks that need no I/O."""
    yield Check("worker_id", True, config.worker_id)
    yield Check(
        "api key",
        bool(config.api_key),
        "present (not shown)" if config.api_key else "missing: pass --api-key or set WARP_API_KEY",
    )
    for name, url, schemes in (
        ("server.websocket_url", config.server.websocket_url, ("ws", "wss")),
        ("server.root_url", config.server.root_url, ("http", "https")),
    ):
        problem = url_problem(url, schemes)
        yield Check(name, problem is None, url if problem is None else f"{url}: {problem}")


async def backend_check(config: WorkerConfig) -> Check:
    name = f"backend {config.backend_name}"
    try:
        backend = create_backend(config)
        async with backend:
            await backend.check()
    except BackendUnavailable as exc:
        return Check(name, False, str(exc))
    return Check(name, True, "ready")


def check_main(config: WorkerConfig, *, out: IO[str] = sys.stdout) -> int:
    """The ``ozw check`` command; the configuration already loaded (that is check one)."""
    checks = [Check("configuration", True, "valid"), *static_checks(config)]
    checks.append(trio.run(functools.partial(backend_check, config)))
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<{width}}  {check.detail}", file=out)
    return 0 if all(check.ok for check in checks) else 1
