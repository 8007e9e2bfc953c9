"""A worker's record, on disk, of the process groups it started and has not reaped.

A worker killed with SIGKILL cannot stop its agents; the kernel ends the direct
children (:mod:`~ozw.backends.execution.spawn`), not what they started. So while a
worker has live groups it keeps a ledger file, ``flock``-ed, listing each: its id and
its leader's start time from /proc (a pid reused later never matches). At start-up, a
ledger nobody holds any more is a dead worker's: its groups are stopped
(:mod:`~ozw.backends.execution.leftovers`) and the file removed.

The file exists only while a group lives: an idle worker holds nothing open in the
directory (the workspace root), so an operator can unmount or remount that volume
between tasks. It is made under a temporary name, locked, then renamed into place, so
a worker starting meanwhile never takes a new ledger for an abandoned one; going idle,
it is emptied before it is removed, so one opened just before reads as nothing to stop.

The file holds one line of JSON, ``{"<pgid>": {"start": <ticks>, "label": ...}}``,
rewritten in place on every change (written first, then cut to length, so a crash
between the two leaves the new line followed by an old tail that reading ignores).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Iterator
from typing import Final

import attrs

from ozw.backends.execution.procfs import read_stat

logger = logging.getLogger(__name__)

LEDGER_PREFIX: Final = ".ozw-processes-"
LEDGER_SUFFIX: Final = ".json"


@attrs.frozen
class Entry:
    """One recorded process group."""

    pgid: int
    start_ticks: int
    """Its leader's start time (clock ticks since boot)."""
    label: str


def parse_ledger(data: bytes) -> list[Entry]:
    """The entries of a ledger file (its first line); [] when it is unreadable."""
    line = data.split(b"\n", 1)[0]
    try:
        table = json.loads(line)
        return [
            Entry(int(pgid), int(item["start"]), str(item.get("label", "")))
            for pgid, item in table.items()
        ]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []


class ProcessLedger:
    """This worker's ledger in a directory; create it with :meth:`open`."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path: str | None = None
        """The file while a group lives, else None."""
        self._fd: int | None = None
        self._entries: dict[int, Entry] = {}
        self._encoded: dict[int, str] = {}
        """Each entry's part of the JSON line, encoded once: a rewrite at 1,000 running
        groups then costs a join, not an encoding of every entry (issue 14)."""

    @classmethod
    def open(cls, directory: str) -> ProcessLedger:
        """The ledger of ``directory``, which must be a writable directory. Raises OSError.

        No file yet: it is made when the first group starts."""
        if not os.path.isdir(directory):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), directory)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), directory)
        return cls(directory)

    @property
    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def record(self, pgid: int, label: str) -> None:
        """Record a group whose leader ``pgid`` was just started (and not yet reaped)."""
        stat = read_stat(pgid)
        if stat is None:
            return  # already gone: nothing to stop later
        self._entries[pgid] = Entry(pgid, stat.start_ticks, label)
        item = json.dumps({"start": stat.start_ticks, "label": label}, separators=(",", ":"))
        self._encoded[pgid] = f'"{pgid}":{item}'
        self._write()

    def forget(self, pgid: int) -> None:
        """Drop a group this worker stopped or reaped; the last one takes the file along."""
        if self._entries.pop(pgid, None) is not None:
            del self._encoded[pgid]
            if self._entries:
                self._write()
            else:
                self._remove()

    def _create(self) -> int:
        """Make the locked file under a name no scan matches, then give it its own."""
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        making = os.path.join(self.directory, f"{LEDGER_PREFIX}{token}.new")
        fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = os.path.join(self.directory, f"{LEDGER_PREFIX}{token}{LEDGER_SUFFIX}")
            os.rename(making, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(making)
            os.close(fd)
            raise
        self.path = path
        return fd

    def _write(self) -> None:
        data = ("{" + ",".join(self._encoded.values()) + "}\n").encode()
        try:
            if self._fd is None:
                self._fd = self._create()
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
        except OSError as exc:
            # The tasks run on; only the crash clean-up of this group may be missed.
            logger.warning(
                "cannot update the process ledger in %s: %s",
                self.directory,
                exc.strerror or exc,
            )

    def _remove(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
        self.path = None

    def close(self) -> None:
        """Remove the ledger (a clean stop: every group was stopped)."""
        self._entries.clear()
        self._encoded.clear()
        self._remove()


@contextlib.contextmanager
def abandoned_ledgers(directory: str) -> Iterator[list[tuple[str, list[Entry]]]]:
    """The ledgers in ``directory`` no live worker holds, locked by us meanwhile, with
    their entries; removed on a clean exit from the block."""
    found: list[tuple[str, int, list[Entry]]] = []
    try:
        with os.scandir(directory) as entries:
            names = [
                e.name
                for e in entries
                if e.name.startswith(LEDGER_PREFIX) and e.name.endswith(LEDGER_SUFFIX)
            ]
    except OSError:
        names = []
    try:
        for name in names:
            path = os.path.join(directory, name)
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                data = os.pread(fd, 1 << 20, 0)
            except OSError:
                os.close(fd)  # held by a live worker (or unreadable): not ours to judge
                continue
            found.append((path, fd, parse_ledger(data)))
        yield [(path, entries) for path, _, entries in found]
        for path, _, _ in found:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        for _, fd, _ in found:
            os.close(fd)
