"""Names, labels and annotations of the objects the Kubernetes backend creates.

docs/protocol.md: a task Job is ``oz-task-<run id>-exec-<last 8 chars of execution
id>``, every object carries the worker, task and execution ids as sanitised label
values plus their SHA-256 hashes, which are exact (the sanitised values can collide)
and are what the backend selects by. All functions are pure.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Final

MAX_NAME: Final = 63
"""A DNS label: also the limit of the ``job-name`` label the Job controller stamps on pods."""
JOB_PREFIX: Final = "oz-task-"
EXEC_SEPARATOR: Final = "-exec-"
EXEC_SUFFIX_LENGTH: Final = 8

LABEL_WORKER_ID: Final = "oz-worker-id"
LABEL_WORKER_HASH: Final = "oz-worker-hash"
LABEL_TASK_ID: Final = "oz-task-id"
LABEL_TASK_HASH: Final = "oz-task-hash"
LABEL_EXECUTION_ID: Final = "oz-execution-id"
LABEL_EXECUTION_HASH: Final = "oz-execution-hash"

ANNOTATION_TASK_ID: Final = "ozw/task-id"
"""The exact task id (labels hold a sanitised, possibly truncated form): reattachment reads it."""
ANNOTATION_EXECUTION_ID: Final = "ozw/execution-id"
ANNOTATION_REPORTED: Final = "ozw/reported"
"""Set on a finished Job kept for its TTL once its outcome was reported: a restarted
worker must not report it again."""

_NOT_NAME_CHAR: Final = re.compile(r"[^a-z0-9]")
_NOT_LABEL_CHAR: Final = re.compile(r"[^a-z0-9._-]")
DNS_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def name_fragment(value: str) -> str:
    """``value`` lower-cased, every char outside ``[a-z0-9]`` a ``-``, no ``-`` at the ends."""
    return _NOT_NAME_CHAR.sub("-", value.lower()).strip("-")


def label_value(value: str) -> str:
    """``value`` as a valid label value: lower-cased, ``[a-z0-9._-]``, ≤ 63 chars,
    alphanumeric at both ends; ``unknown`` when nothing usable is left."""
    sanitised = _NOT_LABEL_CHAR.sub("-", value.lower()).strip("-_.")
    sanitised = sanitised[:MAX_NAME].rstrip("-_.")
    return sanitised or "unknown"


def label_hash(value: str) -> str:
    """Hex of the first 8 bytes of SHA-256 of ``value``: exact where labels are lossy."""
    return hashlib.sha256(value.encode()).digest()[:8].hex()


def execution_id_of(task_id: str, execution_id: str | None) -> str:
    """The execution id (trimmed), falling back to the task id when it is blank."""
    trimmed = (execution_id or "").strip()
    return trimmed or task_id


def _last_fragment(value: str, length: int) -> str:
    fragment = name_fragment(value)
    if len(fragment) > length:
        fragment = fragment[-length:].strip("-")
    return fragment


def job_name(run_id: str, execution_id: str) -> str:
    """The task Job's name: ``oz-task-<run>-exec-<execution suffix>``, at most 63 chars.

    The full run id stays greppable; the run part is truncated only when it would not
    fit, and the execution suffix (what tells follow-ups of one run apart) always stays.
    """
    suffix = _last_fragment(execution_id, EXEC_SUFFIX_LENGTH) or "exec"
    room = max(0, MAX_NAME - len(JOB_PREFIX) - len(EXEC_SEPARATOR) - len(suffix))
    run = name_fragment(run_id)
    if len(run) > room:
        run = run[:room].strip("-")
    return f"{JOB_PREFIX}{run or 'run'}{EXEC_SEPARATOR}{suffix}"


def preflight_job_name(worker_id: str, unique: str | None = None) -> str:
    """``oz-preflight-<worker hash>-<unique>``; ``unique`` is random unless given."""
    return f"oz-preflight-{label_hash(worker_id)}-{unique or secrets.token_hex(4)}"


def worker_labels(worker_id: str) -> dict[str, str]:
    """The labels every object of this worker carries."""
    return {LABEL_WORKER_ID: label_value(worker_id), LABEL_WORKER_HASH: label_hash(worker_id)}


def worker_selector(worker_id: str) -> str:
    """The label selector of every task Job this worker id created."""
    return f"{LABEL_WORKER_HASH}={label_hash(worker_id)}"


def execution_selector(execution_id: str) -> str:
    """The label selector of the pods of one execution."""
    return f"{LABEL_EXECUTION_HASH}={label_hash(execution_id)}"


def task_labels(
    worker_id: str, task_id: str, execution_id: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Labels of a task's Job, pod and Secret: ``extra`` first, then ours (ours win)."""
    labels = dict(extra or {})
    labels.update(worker_labels(worker_id))
    labels[LABEL_TASK_ID] = label_value(task_id)
    labels[LABEL_TASK_HASH] = label_hash(task_id)
    labels[LABEL_EXECUTION_ID] = label_value(execution_id)
    labels[LABEL_EXECUTION_HASH] = label_hash(execution_id)
    return labels


def task_annotations(
    task_id: str, execution_id: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Annotations of a task Job: ``extra``, then the exact ids reattachment needs."""
    return {**(extra or {}), ANNOTATION_TASK_ID: task_id, ANNOTATION_EXECUTION_ID: execution_id}
