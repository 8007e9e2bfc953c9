"""Protocol (de)serialisation against the bare ``json`` module on the same text.

- decode: :func:`ozw.wire.codec.decode_server_message` of a full, realistic
  ``task_assignment`` frame (every field the protocol defines, an agent config
  snapshot with MCP servers, a dozen env vars) vs ``json.loads`` of the same text;
- encode: :func:`ozw.wire.codec.encode_message` of a ``task_completed`` vs
  ``json.dumps`` (same separators) of the object it encodes to.

Each sample is the mean CPU time (``time.process_time``: other processes on a busy
machine do not count) of one operation over a batch of ~5 ms; batches of the two
sides alternate. The ratio is the price of validation and structuring (cattrs,
strict types) on top of JSON parsing itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from bench.stats import Row
from ozw.wire.codec import TaskAssignment, TaskCompleted, decode_server_message, encode_message

BATCH_SECONDS = 0.005

FULL_ASSIGNMENT: dict[str, Any] = {
    "type": "task_assignment",
    "data": {
        "task_id": "run-2f9c1c7e-7a4b-4c1e-9d55-0b7f3a1e8c21",
        "execution_id": "exec-5b8e0c44-93c1-4f0b-8a1d-2c6e9f7d1a03",
        "task": {
            "id": "run-2f9c1c7e-7a4b-4c1e-9d55-0b7f3a1e8c21",
            "title": "Fix the flaky upload test in the storage service",
            "task_definition": {
                "prompt": "The test test_upload_resumes fails about one run in ten on CI. "
                "Find the race, fix it, and add a regression test. Keep the public API.",
                "repository": "github.com/example/storage",
                "branch": "main",
                "attachments": [],
            },
            "created_at": "2026-03-10T22:39:00Z",
            "updated_at": "2026-03-10T22:39:04Z",
            "owner": {"Type": "TEAM", "Id": 7031},
            "agent_config_snapshot": {
                "environment_id": "env-storage-ci",
                "base_prompt": "You are working in a monorepo; run the tests before committing.",
                "model_id": "claude-sonnet",
                "profile_id": "prof-default",
                "skill_spec": "python,go",
                "mcp_servers": {
                    "github": {"url": "https://mcp.example.com/github", "env": None},
                    "linear": {"command": "linear-mcp", "args": ["--stdio"], "env": {"A": "1"}},
                },
                "computer_use_enabled": False,
                "idle_timeout_minutes": 15,
                "harness": {"type": "oz"},
                "harness_auth_secrets": None,
                "inference_providers": {
                    "aws": {
                        "disabled": False,
                        "role_arn": "arn:aws:iam::123456789012:role/oz-inference",
                        "region": "eu-west-1",
                    }
                },
                "session_sharing": {"public_access": "VIEWER"},
                "snapshot_disabled": False,
                "snapshot_upload_timeout_secs": 300,
                "snapshot_script_timeout_secs": 600,
            },
            "agent_conversation_id": "conv-8d1e4b2a",
        },
        "docker_image": "ghcr.io/example/storage-dev:2026.03",
        "sidecar_image": "warpdotdev/warp-agent:latest",
        "env_vars": {
            "GITHUB_ACCESS_TOKEN": "ghs_0123456789abcdefghijklmnopqrstuvwxyzAB",
            "OZ_PROJECT": "storage",
            "CI": "1",
            "GOFLAGS": "-mod=mod",
            "PIP_INDEX_URL": "https://pypi.example.com/simple",
            "HTTP_PROXY": "http://proxy.example.com:3128",
            "HTTPS_PROXY": "http://proxy.example.com:3128",
            "NO_PROXY": "localhost,127.0.0.1,.example.com",
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            "FEATURE_FLAGS": "fast-tests,new-uploader",
            "LOG_LEVEL": "debug",
        },
        "additional_sidecars": [
            {"image": "ghcr.io/example/tools:3", "mount_path": "/opt/tools", "read_write": False},
            {"image": "ghcr.io/example/cache:1", "mount_path": "/cache", "read_write": True},
        ],
        "additional_oz_args": ["--max-turns", "80"],
        "instance_shape": {"vcpus": 4.0, "memory_gb": 8.0},
    },
}

COMPLETED = TaskCompleted(
    "run-2f9c1c7e-7a4b-4c1e-9d55-0b7f3a1e8c21", "the agent finished: exit code 0"
)


def _per_op(fn: Callable[[], object], count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        fn()
    return (time.process_time() - started) / count


def _batch_size(fn: Callable[[], object]) -> int:
    count = 1
    while _per_op(fn, count) * count < BATCH_SECONDS:
        count *= 2
    return count


def compare(
    row: Row, worker: Callable[[], object], baseline: Callable[[], object], batches: int
) -> Row:
    worker_count, baseline_count = _batch_size(worker), _batch_size(baseline)
    for _ in range(batches):
        row.worker.append(_per_op(worker, worker_count))
        row.baseline.append(_per_op(baseline, baseline_count))
    return row


def bench_protocol(batches: int) -> list[Row]:
    text = json.dumps(FULL_ASSIGNMENT)
    decoded = decode_server_message(text)
    assert isinstance(decoded, TaskAssignment), "the frame must decode as an assignment"
    encoded_obj = json.loads(encode_message(COMPLETED))

    def dumps() -> str:
        return json.dumps(encoded_obj, separators=(",", ":"))

    decode = compare(
        Row(
            "protocol: decode task_assignment",
            note=f"decode_server_message vs json.loads, {len(text)} byte frame",
            throughput=True,
        ),
        lambda: decode_server_message(text),
        lambda: json.loads(text),
        batches,
    )
    encode = compare(
        Row(
            "protocol: encode task_completed",
            note="encode_message vs json.dumps of the same object",
            throughput=True,
        ),
        lambda: encode_message(COMPLETED),
        dumps,
        batches,
    )
    return [decode, encode]
