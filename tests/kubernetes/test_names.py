"""Job names, labels and hashes: the Go worker's own vectors, and validity for any input."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from ozw.backends.kubernetes.names import (
    DNS_LABEL_RE,
    LABEL_EXECUTION_HASH,
    LABEL_EXECUTION_ID,
    LABEL_TASK_HASH,
    LABEL_TASK_ID,
    LABEL_WORKER_HASH,
    LABEL_WORKER_ID,
    execution_id_of,
    job_name,
    label_hash,
    label_value,
    preflight_job_name,
    task_labels,
)
from ozw.config.kubernetes import LABEL_VALUE_RE

RUN = "019f5de4-bfd1-762e-92ed-199c971abcba"
EXECUTION = "019f5df0-aaaa-bbbb-cccc-abcdef012345"


def test_job_name_embeds_the_full_run_id_and_the_execution_suffix() -> None:
    assert job_name(RUN, EXECUTION) == f"oz-task-{RUN}-exec-ef012345"


def test_job_name_falls_back_for_empty_ids() -> None:
    assert job_name("", "") == "oz-task-run-exec-exec"


def test_job_name_sanitises_ids() -> None:
    assert job_name("RUN_1", "exec.2") == "oz-task-run-1-exec-exec-2"


def test_job_name_truncates_an_overlong_run_id_and_keeps_the_suffix() -> None:
    name = job_name("a" * 100, EXECUTION)
    assert len(name) == 63
    assert name.endswith("-exec-ef012345")
    assert name.startswith("oz-task-aaaa")


def test_job_name_strips_dashes_left_by_truncation() -> None:
    name = job_name("a" * 40 + "-" * 20, EXECUTION)
    assert "--" not in name
    assert name == "oz-task-" + "a" * 40 + "-exec-ef012345"


def test_labels_of_the_go_vectors() -> None:
    labels = task_labels("Worker A", "Task A", "Execution A")
    assert labels[LABEL_WORKER_ID] == "worker-a"
    assert labels[LABEL_TASK_ID] == "task-a"
    assert labels[LABEL_EXECUTION_ID] == "execution-a"
    assert labels[LABEL_WORKER_HASH] == label_hash("Worker A")
    assert labels[LABEL_TASK_HASH] == label_hash("Task A")
    assert labels[LABEL_EXECUTION_HASH] == label_hash("Execution A")


def test_label_hash_is_the_first_8_bytes_of_sha256() -> None:
    assert label_hash("Worker A") == hashlib.sha256(b"Worker A").hexdigest()[:16]
    assert len(label_hash("")) == 16


def test_worker_labels_win_over_extra_labels() -> None:
    labels = task_labels("w", "t", "e", {"team": "infra", LABEL_WORKER_ID: "spoofed"})
    assert labels["team"] == "infra"
    assert labels[LABEL_WORKER_ID] == "w"
    assert next(iter(labels)) == "team"


def test_label_value_edge_cases() -> None:
    assert label_value("") == "unknown"
    assert label_value("---") == "unknown"
    assert label_value("A.b_C") == "a.b_c"
    assert label_value("x" * 62 + "-y") == "x" * 62
    assert label_value("é") == "unknown"


def test_execution_id_falls_back_to_the_task_id() -> None:
    assert execution_id_of("task-1", " execution-1 ") == "execution-1"
    assert execution_id_of("task-1", None) == "task-1"
    assert execution_id_of("task-1", "   ") == "task-1"


def test_preflight_name_is_unique_and_valid() -> None:
    first, second = preflight_job_name("Worker A"), preflight_job_name("Worker A")
    assert first != second
    assert first.startswith(f"oz-preflight-{label_hash('Worker A')}-")
    assert DNS_LABEL_RE.fullmatch(first)


@given(st.text(), st.text())
def test_every_job_name_is_a_dns_label(run_id: str, execution_id: str) -> None:
    name = job_name(run_id, execution_id)
    assert len(name) <= 63
    assert DNS_LABEL_RE.fullmatch(name), name


@given(st.text())
def test_every_label_value_is_valid(value: str) -> None:
    sanitised = label_value(value)
    assert 1 <= len(sanitised) <= 63
    assert LABEL_VALUE_RE.fullmatch(sanitised), sanitised


@given(st.text(), st.text(), st.text())
def test_every_task_label_is_valid(worker: str, task: str, execution: str) -> None:
    for key, value in task_labels(worker, task, execution).items():
        assert LABEL_VALUE_RE.fullmatch(value), (key, value)
        assert len(value) <= 63


@given(st.text(min_size=1), st.text(min_size=1))
def test_distinct_ids_have_distinct_hashes(first: str, second: str) -> None:
    if first != second:
        assert label_hash(first) != label_hash(second)
