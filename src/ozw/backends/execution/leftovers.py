"""Stopping what a dead worker left running: the groups in its abandoned ledger.

Run at start-up, before anything reuses or sweeps the dead worker's workspaces: an
agent still working in a directory must not meet a new agent of the same run there.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from typing import Final

import anyio

from ozw.backends.execution.ledger import Entry, abandoned_ledgers
from ozw.backends.execution.processes import signal_group
from ozw.backends.execution.procfs import ProcStat, all_stats

logger = logging.getLogger(__name__)

POLL_INTERVAL: Final = 0.05


def leftover_members(entry: Entry, stats: Sequence[ProcStat]) -> list[int]:
    """The running processes that belong to the recorded group ``entry``.

    A process counts when it is in the group and started no earlier than the recorded
    leader; if a process now holds the leader's pid with another start time, the pid
    was reused and the group is someone else's (nothing counts).
    """
    for stat in stats:
        if stat.pid == entry.pgid and stat.start_ticks != entry.start_ticks:
            return []
    return [
        stat.pid
        for stat in stats
        if stat.pgrp == entry.pgid and stat.running and stat.start_ticks >= entry.start_ticks
    ]


def _live(entries: Sequence[Entry]) -> list[Entry]:
    try:
        stats = list(all_stats())
    except OSError:
        return []  # no /proc: nothing can be identified safely
    return [entry for entry in entries if leftover_members(entry, stats)]


async def stop_leftovers(directory: str, kill_grace: float) -> list[Entry]:
    """Stop the groups recorded in the abandoned ledgers of ``directory``: SIGTERM,
    ``kill_grace`` for all of them to exit, then SIGKILL. Returns the groups found
    running; the ledgers are removed."""
    with abandoned_ledgers(directory) as ledgers:
        recorded = [entry for _, entries in ledgers for entry in entries]
        found = _live(recorded)
        for entry in found:
            logger.warning(
                "stopping process group %d (%s) left running by a worker that died",
                entry.pgid,
                entry.label or "unlabelled",
            )
            signal_group(entry.pgid, signal.SIGTERM)
        with anyio.move_on_after(kill_grace):
            # No event tells when a stranger's process exits: poll.
            while _live(found):  # noqa: ASYNC110
                await anyio.sleep(POLL_INTERVAL)
        for entry in _live(found):
            signal_group(entry.pgid, signal.SIGKILL)
    return found
