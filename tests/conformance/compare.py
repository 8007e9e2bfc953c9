"""Compare ozw's transcript of a scenario with the Go fixture (plus the named
differences): a readable list of every place they disagree."""

from __future__ import annotations

import json
from typing import Any

from tests.conformance.differences import Transcript, expected
from tests.conformance.fixtures import read_fixture
from tests.conformance.scenarios import Scenario


def disagreements(want: Any, got: Any, path: str = "") -> list[str]:
    """Every path where ``got`` differs from ``want``."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(want) | set(got), key=str):
            where = f"{path}/{key}"
            if key not in got:
                out.append(f"{where}: missing (Go: {_short(want[key])})")
            elif key not in want:
                out.append(f"{where}: ozw only: {_short(got[key])}")
            else:
                out += disagreements(want[key], got[key], where)
        return out
    if want != got:
        return [f"{path or '/'}: expected {_short(want)}\n    ozw gave {_short(got)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) < 600 else text[:600] + "..."


def check(scenario: Scenario, ozw: Transcript) -> list[str]:
    """The disagreements between ozw and the Go fixture with ``scenario``'s differences."""
    return disagreements(expected(read_fixture(scenario.name), scenario.differences), ozw)
