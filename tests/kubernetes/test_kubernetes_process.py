"""A real ``ozw`` process against the fake API server, for what the real control plane
(test_cluster_tasks.py) cannot be made to do on cue: a pod watch that lags the Job's."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from ozw.wire.codec import TaskCompleted
from tests.kubernetes.fake_cluster import fake_cluster
from tests.support.worker import assignment, start_server, terminal_for
from tests.support.worker_process import start_ozw, worker_env, write_worker_config

pytestmark = pytest.mark.slow


async def test_a_log_is_relayed_even_when_the_pod_watch_lags_the_jobs(tmp_path: Path) -> None:
    with fake_cluster(tmp_path) as fake:
        fake.control("pod-watch-lag", seconds="2")
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery)
            config = write_worker_config(
                tmp_path,
                server.port or 0,
                worker_id="k8s-worker",
                backend=f'[backend.kubernetes]\nnamespace = "agents"\n'
                f'kubeconfig = "{fake.kubeconfig}"\npreflight = false\n',
            )
            ozw = await start_ozw(nursery, config, worker_env(drop=("KUBE",)))
            with trio.fail_after(60):
                await server.wait_connected()
                await server.send(assignment("lagging", docker_image="fake/agent:1"))
                done = await server.wait_for(terminal_for("lagging"))
            assert isinstance(done, TaskCompleted)
            assert "task=lagging [agent] fake agent: TASK_ID=lagging" in ozw.log
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
            nursery.cancel_scope.cancel()
