"""Replay every scenario against the real ``ozw`` command and compare with the Go
worker's recorded transcript (tests/conformance/fixtures/go), allowing exactly the
differences the scenario names (docs/conformance.md)."""

from __future__ import annotations

import pytest

from tests.conformance.compare import check
from tests.conformance.runner import run_scenario
from tests.conformance.scenarios import SCENARIOS, Scenario
from tests.conformance.workers import ozw_worker

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_ozw_matches_the_go_worker(
    scenario: Scenario, request: pytest.FixtureRequest
) -> None:
    docker = None
    if scenario.settings.backend == "docker":
        docker = request.getfixturevalue("conformance_docker")
    transcript = await run_scenario(scenario, ozw_worker(), docker=docker)
    problems = check(scenario, transcript)
    assert not problems, f"ozw differs from the Go worker in {scenario.name}:\n" + "\n".join(
        problems
    )
