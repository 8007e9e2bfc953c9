"""``ozw check``: validate a configuration and the backend's prerequisites.

One line per check (``ok`` / ``FAIL``), non-zero exit on any failure. The API key
is reported as present or missing, never printed.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from typing import IO

import attrs
import trio

from ozw.backends import create_backend
from ozw.config import WorkerConfig, url_problem
from ozw.failures import BackendUnavailable


@attrs.frozen
class Check:
    name: str
    ok: bool
    detail: str


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
            found = await backend.check()
    except BackendUnavailable as exc:
        return Check(name, False, str(exc))
    return Check(name, True, found)


def check_main(config: WorkerConfig, *, out: IO[str] = sys.stdout) -> int:
    """The ``ozw check`` command; the configuration already loaded (that is check one)."""
    checks = [Check("configuration", True, "valid"), *static_checks(config)]
    checks.append(trio.run(functools.partial(backend_check, config)))
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<{width}}  {check.detail}", file=out)
    return 0 if all(check.ok for check in checks) else 1
