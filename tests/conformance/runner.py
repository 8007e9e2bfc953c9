"""Run one scenario against one worker binary and return its normalised transcript."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from tests.conformance import transcript
from tests.conformance.docker_world import VOLUME_DIGEST, DockerWorld
from tests.conformance.scenarios import Scenario
from tests.conformance.session import Session, StepTimeout
from tests.conformance.workers import Worker
from tests.support.procs import alive


async def run_scenario(
    scenario: Scenario,
    worker: Worker,
    *,
    extra_env: Mapping[str, str] = {},
    keep: Path | None = None,
    docker: DockerWorld | None = None,
) -> dict[str, Any]:
    """Drive ``worker`` through ``scenario``; the worker is stopped (SIGTERM) at the end.

    ``keep``: run in this directory and leave it (the worker's log is ``worker.log``).
    """
    with tempfile.TemporaryDirectory(prefix="ozw-conf-") as scratch:
        tmp = keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        session = Session(
            worker,
            scenario.settings,
            tmp,
            extra_env=extra_env,
            runtime_status=scenario.runtime_status,
            docker=docker,
            proxy=scenario.proxy,
        )
        try:
            async with trio.open_nursery() as nursery:
                scraped = ""
                tunnels: list[str] = []
                try:
                    await session.start(nursery)
                    await scenario.steps(session)
                    if scenario.metrics:
                        scraped = await session.scrape()
                    if session.proxy is not None:
                        tunnels = await session.proxy.tunnels()
                except StepTimeout:
                    pass
                with contextlib.suppress(StepTimeout):
                    await session.sigterm()
                nursery.cancel_scope.cancel()
        finally:
            session.close()
        out = assemble(scenario, session, scraped)
        if scenario.proxy:
            name = f"{session.url_host}:{session.servers[0].port}"
            out["proxy_tunnels"] = ["$SERVER_NAME" if t == name else t for t in tunnels]
        if docker is not None:
            docker.clean()
        return out


def assemble(scenario: Scenario, session: Session, scraped: str) -> dict[str, Any]:
    port = session.servers[0].port
    paths = transcript.Paths(
        {
            str(session.workspaces): "$WORKSPACES",
            str(session.records): "$RECORDS",
            str(session.tmp): "$TMP",
            f"http://127.0.0.1:{port}": "$SERVER",
            f"127.0.0.1:{port}": "$SERVER_ADDR",
            **(
                {
                    session.docker.registry: "$REGISTRY",
                    session.docker.registry.replace(":", "-"): "$REGISTRY",
                }
                if session.docker
                else {}
            ),
        }
    )
    agents = []
    for pids in sorted(session.records.glob("pids-*")):
        agents += [int(pid) for pid in pids.read_text().split()]
    out: dict[str, Any] = {
        "scenario": scenario.name,
        "frames": transcript.frames_by_task(session.frames(), paths),
        "connections": sum(server.connections for server in session.servers),
        "bad_frames": sum(len(server.bad_frames) for server in session.servers),
        "records": transcript.records(session.records, paths),
        "leftovers": transcript.leftovers(session.workspaces)
        if scenario.settings.backend == "direct"
        else [],
        "processes_left": sum(1 for pid in agents if alive(pid)),
        "exit_status": session.returncode,
        "timed_out": session.timed_out,
    }
    if session.docker is not None:
        world = session.docker
        out["containers"] = json.loads(paths(json.dumps(session.containers)))
        out["leftovers"] = {
            "containers": len(world.docker("ps", "-aq").split()),
            "volumes": sorted(VOLUME_DIGEST.sub("-<digest>", paths(v)) for v in world.volumes()),
        }
    if scenario.metrics:
        out["metrics"] = transcript.metrics(scraped)
    normal: dict[str, Any] = json.loads(json.dumps(out))
    return normal
