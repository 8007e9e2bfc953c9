"""The docker world, started once per session by the first docker scenario."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.docker_world import DockerWorld, docker_world


@pytest.fixture(scope="session")
def conformance_docker() -> Iterator[DockerWorld]:
    with docker_world() as world:
        yield world
