#!/usr/bin/env python3
"""The Go worker's example dispatch command (examples/command-backend/dispatch.py in
warpdotdev/oz-agent-worker), its payload handling re-written for a test: it reads the
keys that script reads, strictly typed as the Go payload guarantees them, and writes
the transformed body to ``$GO_DISPATCH_OUT`` instead of POSTing it."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TypeVar

T = TypeVar("T")


def require(value: object, kind: type[T], where: str) -> T:
    if not isinstance(value, kind):
        raise TypeError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def transform(payload: dict[str, Any]) -> dict[str, Any]:
    task = require(payload["task"], dict, "task")
    definition = require(task["task_definition"], dict, "task.task_definition")
    for key in ("id", "title", "created_at", "updated_at"):
        require(task[key], str, f"task.{key}")
    return {
        "run": {
            "run_id": require(payload["run_id"], str, "run_id"),
            "execution_id": require(payload["execution_id"], str, "execution_id"),
            "image": require(payload["docker_image"], str, "docker_image"),
            "command": [require(a, str, "base_args[]") for a in payload["base_args"] or []],
            "env": {
                require(k, str, "env key"): require(v, str, "env value")
                for k, v in require(payload["env"], dict, "env").items()
            },
            "mounts": [
                {
                    "image": require(sidecar["image"], str, "sidecars[].image"),
                    "path": require(sidecar["mount_path"], str, "sidecars[].mount_path"),
                    "read_write": require(sidecar["read_write"], bool, "sidecars[].read_write"),
                }
                for sidecar in (payload["sidecars"] or [])
            ],
            "callback_url": require(payload["server_root_url"], str, "server_root_url"),
            "metadata": {
                "worker_id": require(payload["worker_id"], str, "worker_id"),
                "payload_version": require(payload["version"], int, "version"),
                "title": task["title"],
                "prompt": require(definition["prompt"], str, "task_definition.prompt"),
            },
        }
    }


def main() -> int:
    try:
        body = transform(json.load(sys.stdin))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        sys.stderr.write(f"payload is not what the Go worker sends: {exc!r}\n")
        return 1
    with open(os.environ["GO_DISPATCH_OUT"], "w", encoding="utf-8") as stream:
        json.dump(body, stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
