"""A real ``ozw`` worker process for tests: its configuration file, its environment,
and starting it against a local dispatch server."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from ozw.dev.server import DispatchServer
from tests.support.ozw_process import STANDIN_AGENT, OzwProcess
from tests.support.worker import API_KEY, start_server


def worker_env(*, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment for an ``ozw`` child: no ``WARP_*`` variable (nor any
    starting with a prefix in ``drop``) but the tests' API key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARP_", *drop))}
    env["WARP_API_KEY"] = API_KEY
    return env


def write_worker_config(
    tmp_path: Path, port: int, *, worker_id: str, backend: str, top: str = ""
) -> Path:
    """``tmp_path/worker.toml``: ``worker_id`` and ``top`` (top-level keys), a
    ``[server]`` table for the dispatch server on ``port``, then ``backend`` (a
    backend table, as TOML text)."""
    config = tmp_path / "worker.toml"
    config.write_text(
        f"""
worker_id = "{worker_id}"
{top}

[server]
websocket_url = "ws://127.0.0.1:{port}/api/v1/selfhosted/worker/ws"
root_url = "http://127.0.0.1:{port}"

{backend}
"""
    )
    return config


def direct_backend(tmp_path: Path, *, kill_grace: str, extra: str = "") -> str:
    """A ``[backend.direct]`` table: workspaces under ``tmp_path``, the stand-in agent."""
    return f"""[backend.direct]
workspace_root = "{tmp_path / "workspaces"}"
oz_path = "{STANDIN_AGENT}"
kill_grace = "{kill_grace}"
{extra}"""


async def start_ozw(
    nursery: trio.Nursery, config: Path, env: dict[str, str] | None = None
) -> OzwProcess:
    """``ozw --config <config>`` started in ``nursery`` (with :func:`worker_env` unless
    ``env`` is given)."""
    process = OzwProcess(["--config", str(config)], worker_env() if env is None else env)
    started: OzwProcess = await nursery.start(process.run)
    return started


async def start_direct_worker(
    nursery: trio.Nursery,
    tmp_path: Path,
    *,
    worker_id: str,
    kill_grace: str,
    top: str = "",
    extra: str = "",
    args: tuple[str, ...] = (),
) -> tuple[DispatchServer, OzwProcess]:
    """A local dispatch server and a real ``ozw --config tmp_path/worker.toml ARGS`` on
    the direct backend (``top``: top-level keys; ``extra``: lines of its table) dialling it."""
    server = await start_server(nursery)
    backend = direct_backend(tmp_path, kill_grace=kill_grace, extra=extra)
    config = write_worker_config(
        tmp_path, server.port or 0, worker_id=worker_id, backend=backend, top=top
    )
    process = OzwProcess(["--config", str(config), *args], worker_env())
    return server, await nursery.start(process.run)
