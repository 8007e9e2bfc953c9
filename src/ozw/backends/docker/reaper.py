"""Leftovers of this worker id: containers and private volumes a crashed run left.

Found by the ``ozw.worker_id`` label, so two live workers must not share a worker id.
With cleanup on, leftover containers are removed, and so are leftover private
``read_write`` sidecar volumes; with cleanup off, only running leftovers are killed
(stopped ones are kept for debugging). What this process tracks is never touched.
"""

from __future__ import annotations

import logging

from ozw.backends.docker.cli import DockerCLI
from ozw.backends.docker.container import LABEL_ROLE, LABEL_WORKER, ROLE_RW

logger = logging.getLogger("ozw.backends.docker")


class Reaper:
    """Removes what an earlier run of ``worker_id`` left behind."""

    def __init__(self, cli: DockerCLI, worker_id: str, *, cleanup: bool) -> None:
        self.cli = cli
        self.worker_id = worker_id
        self.cleanup = cleanup

    async def reap(self) -> list[str]:
        """Reap containers, then (cleanup on) private volumes; the containers' names.

        Unbounded: the caller bounds it.
        """
        names = await self._reap_containers()
        if self.cleanup:
            await self._reap_private_volumes()
        return names

    async def _reap_containers(self) -> list[str]:
        # Cleanup off keeps stopped leftovers for debugging: only running ones matter.
        which = "--all" if self.cleanup else "--filter=status=running"
        result = await self.cli.run(
            "ps",
            which,
            f"--filter=label={LABEL_WORKER}={self.worker_id}",
            "--format={{.Names}}",
        )
        if not result.ok:
            logger.warning("could not list leftover containers: %s", result.error)
            return []
        names = [n for n in result.stdout.decode().split() if n and n not in self.cli.containers]
        if not names:
            return []
        verb = "rm" if self.cleanup else "kill"
        action = ("rm", "--force", *names) if self.cleanup else ("kill", *names)
        outcome = await self.cli.run(*action)
        if outcome.ok:
            done = "removed" if self.cleanup else "stopped (kept: cleanup is off)"
            logger.warning(
                "%s %d container(s) left by an earlier run of worker %s: %s",
                done,
                len(names),
                self.worker_id,
                ", ".join(names),
            )
        else:
            logger.warning("docker %s of leftover containers failed: %s", verb, outcome.error)
        return names

    async def _reap_private_volumes(self) -> None:
        """Remove the private read-write sidecar volumes an earlier run left behind."""
        result = await self.cli.run(
            "volume",
            "ls",
            "--quiet",
            f"--filter=label={LABEL_WORKER}={self.worker_id}",
            f"--filter=label={LABEL_ROLE}={ROLE_RW}",
        )
        if not result.ok:
            logger.warning("could not list leftover sidecar volumes: %s", result.error)
            return
        names = [n for n in result.stdout.decode().split() if n not in self.cli.volumes]
        if not names:
            return
        outcome = await self.cli.run("volume", "rm", "--force", *names)
        if outcome.ok:
            logger.warning(
                "removed %d read-write sidecar volume(s) left by an earlier run of worker %s: %s",
                len(names),
                self.worker_id,
                ", ".join(names),
            )
        else:
            logger.warning("docker volume rm of leftover volumes failed: %s", outcome.error)
