"""The Go chart's exact arguments and YAML start the real ``ozw`` and run a task.

tests/data/go_chart_rendered.yaml is the Go oz-agent-worker chart as helm renders it
(the command is in its header): its Deployment's arguments and its ConfigMap's
config.yaml are used as they are, against the project's dispatch server and the real
control plane (tests/kubernetes/real/), in the ConfigMap's namespace ``agents``. Only
the paths differ: the config file is where the ConfigMap would be mounted, here a
temporary directory, and the cluster is reached with a kubeconfig holding a real token
of the ServiceAccount (no in-cluster mount here). Its environment is the chart's too
(the API key as its Secret would give it). The Role is ozw's (deploy/kubernetes/): the
Go chart's grants no Secrets, which ozw uses for a task's environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from ozw.wire.codec import TaskClaimed, TaskCompleted, TaskFailed
from tests.kubernetes.real.control_plane import ControlPlane
from tests.kubernetes.real.tenant import tenant
from tests.support.ozw_process import OzwProcess
from tests.support.worker import API_KEY, assignment, start_server, terminal_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RENDERED = Path(__file__).resolve().parents[1] / "data" / "go_chart_rendered.yaml"
MOUNTED = "/etc/oz-agent-worker/config.yaml"


def go_chart() -> tuple[list[str], dict[str, str], str]:
    """The worker container's arguments, its plain environment values (the API key
    comes from a Secret) and the ConfigMap's config.yaml."""
    docs: list[dict[str, Any]] = [doc for doc in yaml.safe_load_all(RENDERED.read_text()) if doc]
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    (config_map,) = [doc for doc in docs if doc["kind"] == "ConfigMap"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    return container["args"], env, config_map["data"]["config.yaml"]


async def test_the_go_chart_starts_ozw_and_a_task_runs(
    kube: ControlPlane, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    args, chart_env, config_yaml = go_chart()
    assert chart_env == {"OTEL_METRICS_EXPORTER": "none"}  # the Go chart, metrics off
    assert args[:2] == ["--config-file", MOUNTED]
    config = tmp_path / "config.yaml"
    config.write_text(config_yaml)
    cluster = tenant(kube, request.node.name, tmp_path, namespace="agents")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARP_", "KUBE", "OTEL_"))}
    env |= {**chart_env, "WARP_API_KEY": API_KEY, "KUBECONFIG": str(cluster.kubeconfig)}
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        argv = [
            str(config) if arg == MOUNTED else arg.replace("{port}", str(server.port))
            for arg in args
        ]
        ozw: OzwProcess = await nursery.start(OzwProcess(argv, env).run)
        with trio.fail_after(90):
            await server.wait_connected()
            await ozw.wait_line("kubernetes preflight Job .* passed")
            await server.send(assignment("go-chart-1", docker_image="fake/agent:1"))
            done = await server.wait_for(terminal_for("go-chart-1"))
        assert isinstance(done, TaskCompleted)
        assert server.messages_for("go-chart-1")[0] == TaskClaimed("go-chart-1", "k8s-worker")
        assert "warning" not in ozw.log.lower()  # nothing in the Go chart's files to warn of
        # A failed task's Job is kept: it carries the chart's 8-hour deadline and TTL.
        with trio.fail_after(90):
            await server.send(assignment("go-chart-2", docker_image="fake/exit-3"))
            assert isinstance(await server.wait_for(terminal_for("go-chart-2")), TaskFailed)
        kept = cluster.job("go-chart-2")
        assert kept is not None
        assert (kept["spec"]["activeDeadlineSeconds"], kept["spec"]["ttlSecondsAfterFinished"]) == (
            28800,
            86400,
        )
        nursery.cancel_scope.cancel()
