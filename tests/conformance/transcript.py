"""A scenario's normalised transcript: pure functions from what was observed to JSON
that is the same from run to run (no ports, temporary paths, pids or timings).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

ENV_VALUES: Final = (
    "TASK_ID",
    "GIT_TERMINAL_PROMPT",
    "GH_PROMPT_DISABLED",
    "GIT_CONFIG_GLOBAL",
    "WARP_SERVER_ROOT_URL",
    "CLAUDE_CONFIG_DIR",
    "CODEX_HOME",
    "OZ_RUN_ID",
    "OZ_EXECUTION_ID",
    "OZ_WORKER_BACKEND",
    "OZ_WORKSPACE_ROOT",
    "OZ_SERVER_ROOT_URL",
    "OZ_DOCKER_IMAGE",
    "CONFORMANCE_VALUE",
    "CONFORMANCE_MULTILINE",
)
"""Variables whose (normalised) values are part of the transcript; of every other
variable only the name is."""

IGNORED_ENV: Final = re.compile(r"^(CONFORMANCE_\w+_SCRIPT|_?PYENV_\w+|LC_CTYPE|PWD|SHLVL|_)$")
"""Names that belong to the runner, the shell or the interpreter's launcher (pyenv's
shim, Python's locale coercion), not to the worker."""

FIXED_MESSAGES: Final = frozenset(
    {
        "Task completed successfully",
        "Task cancelled by user request.",
        "worker at maximum concurrency",
    }
)
METRIC_LINE: Final = re.compile(r"^(oz_worker_\w+?)(\{[^}]*\})?\s+(\S+)$")
SCOPE_LABEL: Final = re.compile(r"^otel_scope_\w+$|^job$|^instance$")


class Paths:
    """Rewrites the run's own values into placeholders."""

    def __init__(self, replacements: Mapping[str, str]) -> None:
        # Longest first: a workspace path before the temporary directory holding it.
        self.items = sorted(replacements.items(), key=lambda item: -len(item[0]))

    def __call__(self, text: str) -> str:
        for value, placeholder in self.items:
            text = text.replace(value, placeholder)
        return text


def message_text(message: str) -> str:
    """A result's message for people: fixed messages verbatim, others by their cause's
    first words (the detail after the first ``:`` names process states and paths)."""
    if message in FIXED_MESSAGES:
        return message
    head, colon, _ = message.partition(":")
    return f"{head}: ..." if colon else message


def frame(raw: Mapping[str, Any], paths: Paths) -> dict[str, Any]:
    data = dict(raw.get("data") or {})
    if isinstance(data.get("message"), str):
        data["message"] = message_text(paths(data["message"]))
    if isinstance(data.get("reason"), str):
        data["reason"] = message_text(data["reason"])
    return {"type": raw.get("type"), "data": data}


def frames_by_task(frames: Iterable[Mapping[str, Any]], paths: Paths) -> dict[str, list[Any]]:
    """Frames per task id, each task's in the order the server received them (the order
    across tasks that run at once is the scheduler's, not the worker's contract)."""
    grouped: dict[str, list[Any]] = {}
    for raw in frames:
        task_id = str((raw.get("data") or {}).get("task_id"))
        grouped.setdefault(task_id, []).append(frame(raw, paths))
    return dict(sorted(grouped.items()))


def environment(env: Mapping[str, str], paths: Paths) -> dict[str, Any]:
    names = sorted(name for name in env if not IGNORED_ENV.match(name))
    values = {name: paths(env[name]) for name in ENV_VALUES if name in env}
    return {"names": names, "values": values}


def agent_record(record: Mapping[str, Any], paths: Paths) -> dict[str, Any]:
    argv = [paths(part) for part in record["argv"]]
    return {
        "argv": ["oz", *argv[1:]],
        "cwd": paths(record["cwd"]),
        "env": environment(record["env"], paths),
    }


def hook_record(record: Mapping[str, Any], paths: Paths) -> dict[str, Any]:
    out: dict[str, Any] = {"cwd": paths(record["cwd"]), "env": environment(record["env"], paths)}
    if record.get("stdin") is not None:
        payload = json.loads(record["stdin"])
        env = payload.get("env")
        if isinstance(env, dict):
            payload["env"] = environment(env, paths)
        out["payload"] = json.loads(paths(json.dumps(payload)))
    return out


def records(directory: Path, paths: Paths) -> dict[str, Any]:
    """What the stand-in agent and the hooks recorded, by file name."""
    out: dict[str, Any] = {}
    for path in sorted(directory.glob("*.json")):
        record = json.loads(path.read_text())
        name = path.stem
        out[name] = (
            agent_record(record, paths) if name.startswith("agent-") else hook_record(record, paths)
        )
    for path in sorted(directory.glob("pids-*")):
        out[f"runs-{path.name[5:]}"] = len(path.read_text().split())
    return out


def leftovers(root: Path) -> list[str]:
    """Everything under ``root`` (relative paths), deepest two levels."""
    if not root.exists():
        return ["<no workspace root>"]
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if len(relative.parts) <= 2:
            found.append(re.sub(r"oz-env-\w+", "oz-env-*", str(relative)))
    return found


def metrics(text: str) -> dict[str, float] | str:
    """``oz_worker_*`` series as ``name{label="v",...}`` → value; histograms by their
    count; OpenTelemetry's scope labels and the version dropped."""
    if text.startswith("# scrape failed"):
        return text
    series: dict[str, float] = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line.strip())
        if not match:
            continue
        name, labels, value = match.groups()
        if name.endswith(("_bucket", "_sum", "_created")):
            continue
        pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or "")
        kept = sorted(
            (key, "*" if key == "version" else val)
            for key, val in pairs
            if not SCOPE_LABEL.match(key)
        )
        rendered = ",".join(f'{key}="{val}"' for key, val in kept)
        series[f"{name}{{{rendered}}}" if rendered else name] = float(value)
    return dict(sorted(series.items()))
