"""Leftovers of this worker id: containers and private volumes a crashed run left, or
that a task's teardown could not remove (the daemon was down).

Found by the ``ozw.worker_id`` label, so two live workers must not share a worker id.
With cleanup on, leftover containers are removed, and so are leftover private
``read_write`` sidecar volumes; with cleanup off, only running leftovers are killed
(stopped ones are kept for debugging). What this process tracks (the containers and
volumes of running tasks) is never touched.

At start-up :meth:`Reaper.reap` runs once. While the worker runs, a teardown that could
not remove something calls :meth:`Reaper.note`, and :meth:`Reaper.sweep_when_needed`
(a background task of the backend) then sweeps every ``sweep_interval`` until a sweep
succeeds: once the daemon answers again, nothing is left behind.
"""

from __future__ import annotations

import logging
from typing import Final

import anyio

from ozw.backends.docker.cli import DockerCLI
from ozw.backends.docker.rules import LABEL_ROLE, LABEL_WORKER, ROLE_RW

logger = logging.getLogger(__name__)

SWEEP_INTERVAL: Final = 10.0
"""Default pause between sweeps while something teardown could not remove is left."""


class Reaper:
    """Removes what an earlier run of ``worker_id`` left behind."""

    def __init__(self, cli: DockerCLI, worker_id: str, *, cleanup: bool) -> None:
        self.cli = cli
        self.worker_id = worker_id
        self.cleanup = cleanup
        self.sweep_interval: float = SWEEP_INTERVAL
        self._noted = 0
        """How many times :meth:`note` was called (a sweep clears what came before it)."""
        self._needed = anyio.Event()
        self.sweeps = 0
        """How many sweeps succeeded after a :meth:`note` (tests read it)."""

    async def reap(self, why: str = "left by an earlier run") -> tuple[list[str], bool]:
        """Reap containers, then (cleanup on) private volumes.

        Returns the containers' names and whether every call succeeded. ``why`` goes in
        the log line. Unbounded: the caller bounds it.
        """
        names, ok = await self._reap_containers(why)
        if self.cleanup:
            ok = await self._reap_private_volumes(why) and ok
        return names, ok

    def note(self) -> None:
        """Something of this worker could not be removed: sweep until it is gone."""
        self._noted += 1
        self._needed.set()

    async def sweep_when_needed(self) -> None:
        """Forever: after each :meth:`note`, sweep every ``sweep_interval`` until a sweep
        succeeds (the daemon answered every call)."""
        while True:
            await self._needed.wait()
            noted = self._noted
            ok = False
            with anyio.move_on_after(self.cli.call_timeout):
                _, ok = await self.reap("that a task's teardown could not remove")
            if ok:
                self.sweeps += 1
                if noted == self._noted:
                    self._needed = anyio.Event()
                continue
            await anyio.sleep(self.sweep_interval)

    async def _reap_containers(self, why: str) -> tuple[list[str], bool]:
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
            return [], False
        names = [n for n in result.stdout.decode().split() if n and n not in self.cli.containers]
        if not names:
            return [], True
        verb = "rm" if self.cleanup else "kill"
        action = ("rm", "--force", *names) if self.cleanup else ("kill", *names)
        outcome = await self.cli.run(*action)
        if outcome.ok:
            done = "removed" if self.cleanup else "stopped (kept: cleanup is off)"
            logger.warning(
                "%s %d container(s) of worker %s %s: %s",
                done,
                len(names),
                self.worker_id,
                why,
                ", ".join(names),
            )
        else:
            logger.warning("docker %s of leftover containers failed: %s", verb, outcome.error)
        return names, outcome.ok

    async def _reap_private_volumes(self, why: str) -> bool:
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
            return False
        names = [n for n in result.stdout.decode().split() if n not in self.cli.volumes]
        if not names:
            return True
        outcome = await self.cli.run("volume", "rm", "--force", *names)
        if outcome.ok:
            logger.warning(
                "removed %d read-write sidecar volume(s) of worker %s %s: %s",
                len(names),
                self.worker_id,
                why,
                ", ".join(names),
            )
        else:
            logger.warning("docker volume rm of leftover volumes failed: %s", outcome.error)
        return outcome.ok
