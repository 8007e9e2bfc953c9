"""What Linux's /proc says about a process: its state, process group and start time.

The start time (clock ticks since boot, field 22 of ``/proc/<pid>/stat``) tells a
process from a later one that reused its pid.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import attrs


@attrs.frozen
class ProcStat:
    pid: int
    state: str
    """``R``, ``S``, ... ``Z`` (zombie), ``X`` (dead)."""
    pgrp: int
    start_ticks: int

    @property
    def running(self) -> bool:
        """Not a zombie: it can still do something (and be stopped)."""
        return self.state not in ("Z", "X")


def parse_stat(pid: int, stat: bytes) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None when it is not in the expected shape."""
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return ProcStat(pid, fields[0].decode(), int(fields[2]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def read_stat(pid: int) -> ProcStat | None:
    """The process ``pid`` as /proc shows it now; None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            return parse_stat(pid, stream.read())
    except OSError:
        return None


def all_stats() -> Iterator[ProcStat]:
    """Every process /proc shows (those exiting meanwhile are skipped). Raises OSError
    when /proc cannot be listed."""
    for name in os.listdir("/proc"):
        if name.isdigit() and (found := read_stat(int(name))) is not None:
            yield found
