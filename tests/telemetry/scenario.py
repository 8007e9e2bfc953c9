"""One run, the same for ozw and for the Go worker: a dispatch server (``ozw
dev-server``) sends two tasks to a worker on the direct backend with the stand-in
agent; one succeeds, one fails. The tasks carry a secret (an env value, also in the
title) and the worker an API key: canaries no export may contain."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import trio

from tests.support.ozw_command import HOST_ENV
from tests.support.ozw_process import STANDIN_AGENT, OzwProcess

WORKER_ID: Final = "otel-worker"
API_KEY: Final = "canary-api-key-6d1e0b9a"
TASK_SECRET: Final = "canary-task-secret-41f7c2"
CONFIG_SECRET: Final = "canary-config-secret-9b3e55"
"""Inherited by the tasks from the worker's own environment (``environment`` entry)."""
CANARIES: Final = (API_KEY, TASK_SECRET, CONFIG_SECRET)
TASKS: Final = ("ok-1", "bad-1")
SCRIPT: Final = [
    {
        "task_id": "ok-1",
        "task": {"id": "ok-1", "title": f"deploy with {TASK_SECRET}"},
        "env_vars": {"OZ_STANDIN_PROMPT": "echo hi", "DEPLOY_TOKEN": TASK_SECRET},
    },
    {
        "task_id": "bad-1",
        "task": {"id": "bad-1", "title": f"a task that fails with {CONFIG_SECRET}"},
        "env_vars": {"OZ_STANDIN_PROMPT": "fail"},
    },
]


@asynccontextmanager
async def dispatch_server(nursery: trio.Nursery, workdir: Path) -> AsyncIterator[tuple[str, Path]]:
    """``ozw dev-server`` sending :data:`SCRIPT`: (its WebSocket URL, its record file)."""
    script = workdir / "script.jsonl"
    script.write_text("".join(json.dumps(line) + "\n" for line in SCRIPT))
    record = workdir / "record.jsonl"
    args = ["dev-server", "--port", "0", "--api-key", API_KEY, "--assignments", str(script)]
    dev = await nursery.start(OzwProcess([*args, "--record", str(record)], HOST_ENV).run)
    listening = await dev.wait_line(r"listening on (ws://\S+)")
    yield listening.split()[-3], record


def ozw_config(workdir: Path) -> Path:
    config = workdir / "worker.toml"
    config.write_text(
        f'worker_id = "{WORKER_ID}"\n\n[backend.direct]\n'
        f'workspace_root = "{workdir / "ws"}"\noz_path = "{STANDIN_AGENT}"\n'
        'environment = [{ name = "DEPLOY_KEY" }]\n'
    )
    return config


def ozw_args(workdir: Path, url: str, *more: str) -> list[str]:
    return ["run", "--config", str(ozw_config(workdir)), "--websocket-url", url, *more]


def worker_env(otel: Mapping[str, str]) -> dict[str, str]:
    """The host's environment less any OTEL_*/WARP_* of its own, plus ``otel``."""
    env = {k: v for k, v in HOST_ENV.items() if not k.startswith(("OTEL_", "WARP_"))}
    return {**env, "WARP_API_KEY": API_KEY, "DEPLOY_KEY": CONFIG_SECRET, **otel}


def outcomes(record: Path) -> dict[str, str]:
    """Each task's terminal message type, from the dev server's record."""
    if not record.exists():
        return {}
    return {
        line["data"]["task_id"]: line["type"]
        for line in map(json.loads, record.read_text().splitlines())
        if line["type"] in ("task_completed", "task_failed")
    }
