"""One scanner of /proc: which live processes carry a marker, and what they run.

No event fires when a process that is not our child dies, so tests that wait for
strangers to go poll these, bounded.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

PROC = Path("/proc")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies do not count: our init does not reap)."""
    try:
        stat = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def _pids() -> list[int]:
    own = os.getpid()
    return [int(name) for name in os.listdir(PROC) if name.isdigit() and int(name) != own]


def _read(pid: int, name: str) -> bytes | None:
    try:
        return (PROC / str(pid) / name).read_bytes()
    except OSError:
        return None


def processes_carrying(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker``."""
    needle = marker.encode()
    return [pid for pid in _pids() if needle in (_read(pid, "environ") or b"") and alive(pid)]


def cmdlines_containing(needle: bytes) -> list[str]:
    """``pid: argv`` of every process whose command line holds ``needle``."""
    found = []
    for pid in _pids():
        cmdline = _read(pid, "cmdline")
        if cmdline is not None and needle in cmdline:
            found.append(f"{pid}: {cmdline!r}")
    return found


def environ_of(raw: bytes) -> dict[str, str]:
    """Parse a /proc/<pid>/environ (NUL-separated ``NAME=value``)."""
    pairs = (item.decode().partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


async def wait_until_gone(pids: list[int], timeout: float = 2.0) -> list[int]:
    """Wait (bounded) for ``pids`` to die; returns those still alive."""
    with anyio.move_on_after(timeout):
        while any(alive(pid) for pid in pids):  # noqa: ASYNC110 (no event for a stranger)
            await anyio.sleep(0.01)
    return [pid for pid in pids if alive(pid)]
