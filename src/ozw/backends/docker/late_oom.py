"""An OOM kill the engine reports after the container's exit.

containerd's shim publishes a task's OOM event and its exit event from different
goroutines, so under load the exit can come first (containerd issue 12260; the shim
orders them only since containerd 2.2). The engine then records the exit with
``OOMKilled`` false and logs the container's ``oom`` event tens of milliseconds later
(seen here: ``die`` then ``oom`` 65 ms and 103 ms apart under a load of 15 on 2 CPUs).
So when a container under a memory limit was killed by SIGKILL and inspect does not say
OOM, the engine's event log is asked, for at most :data:`LATE_OOM_WAIT`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Final

import anyio

from ozw.backends.docker.cli import DockerCLI
from ozw.backends.docker.inspect import ContainerState
from ozw.backends.execution.spawn import spawn
from ozw.telemetry.logs import log_command

logger = logging.getLogger(__name__)

LATE_OOM_WAIT: Final = 3.0
"""How long to wait for a late ``oom`` event: far beyond the gap seen under load, and
paid only by an agent killed by SIGKILL under a memory limit without an OOM."""
SIGKILL_EXIT: Final = 137


def late_oom_possible(state: ContainerState, memory_limit: int | None) -> bool:
    """Whether the engine may yet report an OOM kill that inspect does not show."""
    return (
        memory_limit is not None
        and state.started_at is not None
        and not state.oom_killed
        and state.exit_code == SIGKILL_EXIT
    )


async def oom_logged(
    cli: DockerCLI, container: str, state: ContainerState, wait: float = LATE_OOM_WAIT
) -> bool:
    """Whether the engine logs an ``oom`` event of ``container`` (a unique name) since it
    started, within ``wait`` seconds; False when it does not or the CLI fails."""
    if state.started_at is None:
        return False
    command = [
        cli.docker,
        "events",
        f"--since={int(state.started_at.timestamp())}",
        f"--filter=container={container}",
        "--filter=event=oom",
        "--format={{.Action}}",
    ]
    log_command(logger, command)
    # Through the execution layer's start: `docker events` streams until killed, so
    # like every other child it must end with a worker that is killed.
    process = await spawn(command, env=cli.environ)
    try:
        assert process.stdout is not None
        with anyio.move_on_after(wait):
            async for chunk in process.stdout:
                if chunk.strip():
                    return True
        return False
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()
