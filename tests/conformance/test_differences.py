"""The differences table in docs/conformance.md and the code agree; every scenario has a
fixture with its Go commit; the transcript rules hold (no worker needed: fast)."""

from __future__ import annotations

import re

from tests.conformance import transcript
from tests.conformance.differences import DIFFERENCES, StaleDifference, expected
from tests.conformance.fixtures import FIXTURES, header, read_fixture
from tests.conformance.scenarios import SCENARIOS
from tests.conformance.workers import REPO

DOC = REPO / "docs" / "conformance.md"


def table_names() -> list[str]:
    text = DOC.read_text().split("## Differences on purpose", 1)[1]
    return re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.MULTILINE)


def test_the_table_names_exactly_the_differences_the_code_allows() -> None:
    names = table_names()
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(DIFFERENCES)


def test_every_difference_is_used_and_every_used_one_exists() -> None:
    used = {name for scenario in SCENARIOS for name in scenario.differences}
    assert used == set(DIFFERENCES)


def test_every_scenario_has_a_go_fixture_and_every_fixture_a_scenario() -> None:
    names = {scenario.name for scenario in SCENARIOS}
    assert {path.stem for path in FIXTURES.glob("*.json")} == names
    assert len(names) == len(SCENARIOS) >= 25
    for name in names:
        recorded = header(name)
        assert re.fullmatch(r"[0-9a-f]{7,40}", recorded["go_commit"]), name
        assert recorded["command"].startswith("python -m tests.conformance record")
        assert read_fixture(name)["timed_out"] == [], f"{name}: the Go worker timed out"


def test_every_named_difference_changes_its_scenario() -> None:
    # expected() raises StaleDifference for a difference that changes nothing.
    for scenario in SCENARIOS:
        try:
            expected(read_fixture(scenario.name), scenario.differences)
        except StaleDifference as exc:
            raise AssertionError(f"{scenario.name}: {exc}") from None


def test_messages_keep_fixed_texts_and_cut_details() -> None:
    assert transcript.message_text("Task completed successfully") == "Task completed successfully"
    assert (
        transcript.message_text("Failed to execute task: oz agent exited with error: exit 3")
        == "Failed to execute task: ..."
    )
    assert transcript.message_text("no detail") == "no detail"


def test_metrics_are_normalised() -> None:
    text = "\n".join(
        [
            "# HELP oz_worker_tasks_active x",
            'oz_worker_tasks_active{otel_scope_name="w",otel_scope_version=""} 2',
            'oz_worker_info{worker_id="w",version="1.2",backend="direct"} 1',
            'oz_worker_task_duration_seconds_bucket{result="failed",le="1"} 1',
            'oz_worker_task_duration_seconds_count{result="failed"} 1',
            'oz_worker_task_duration_seconds_sum{result="failed"} 0.25',
            "process_cpu_seconds_total 4",
        ]
    )
    assert transcript.metrics(text) == {
        'oz_worker_info{backend="direct",version="*",worker_id="w"}': 1.0,
        'oz_worker_task_duration_seconds_count{result="failed"}': 1.0,
        "oz_worker_tasks_active": 2.0,
    }


def test_paths_replace_the_longest_first() -> None:
    paths = transcript.Paths({"/tmp/x": "$TMP", "/tmp/x/ws": "$WS"})
    assert paths("/tmp/x/ws/t1 and /tmp/x/r") == "$WS/t1 and $TMP/r"
