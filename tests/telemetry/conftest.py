"""The tests' OpenTelemetry Collector binary, built once (a cache hit is instant)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.telemetry.collector import collector_binary


@pytest.fixture(scope="session")
def otelcol() -> Path:
    return collector_binary()
