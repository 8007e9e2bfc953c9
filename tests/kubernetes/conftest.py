"""The real control plane (one per session) and a namespace per test for its tests."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.kubernetes.real.control_plane import ControlPlane, control_plane
from tests.kubernetes.real.tenant import Tenant, tenant


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with control_plane(tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane


@pytest.fixture
def cluster(kube: ControlPlane, request: pytest.FixtureRequest, tmp_path: Path) -> Tenant:
    """A fresh namespace with the worker's ServiceAccount, Role and RoleBinding from
    deploy/kubernetes/, and a kubeconfig holding a real token of that account."""
    return tenant(kube, request.node.name, tmp_path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    plane = item.funcargs.get("kube") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(plane, ControlPlane):
        # The logs stay in the session's temporary directory; name them, show the ends.
        for name, path in plane.logs().items():
            tail = "\n".join(path.read_text(errors="replace").splitlines()[-40:])
            report.sections.append((f"{name} log ({path})", tail))
    return report
