"""A real ``ozw`` process on the real control plane whose pod watch lags the Job's:
once it runs, its Role lets it list pods but no longer watch them (the API server
refuses every pod watch), so it learns of the pod only when the Job has completed."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from ozw.wire.codec import TaskCompleted
from tests.kubernetes.real.tenant import Tenant
from tests.support.worker import assignment, start_server, terminal_for
from tests.support.worker_process import start_ozw, worker_env, write_worker_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def test_a_log_is_relayed_even_when_the_pod_watch_lags_the_jobs(
    cluster: Tenant, tmp_path: Path
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        config = write_worker_config(
            tmp_path,
            server.port or 0,
            worker_id="k8s-worker",
            backend=f'[backend.kubernetes]\nnamespace = "{cluster.name}"\n'
            f'kubeconfig = "{cluster.kubeconfig}"\npreflight = false\n',
        )
        ozw = await start_ozw(nursery, config, worker_env(drop=("KUBE",)))
        with trio.fail_after(60):
            await server.wait_connected()
        # Its permissions were checked at start; from now on no pod watch is allowed.
        await trio.to_thread.run_sync(lambda: cluster.revoke("watch", "pods"))
        with trio.fail_after(60):
            await server.send(assignment("lagging", docker_image="fake/agent:1"))
            done = await server.wait_for(terminal_for("lagging"))
        assert isinstance(done, TaskCompleted)
        assert "Pod watch failed" in ozw.log, "the pod watch was refused"
        assert "task=lagging [agent] fake agent: TASK_ID=lagging" in ozw.log
        ozw.send_signal(signal.SIGTERM)
        assert await ozw.wait() == 0
        nursery.cancel_scope.cancel()
