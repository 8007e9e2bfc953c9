"""The outbox: every message the worker owes the server, in order, until delivered.

Claimed, rejected and terminal messages are queued here; the connection's single
writer sends them. An entry is *confirmed* only when a ping sent after it has been
answered (the server had read everything before the ping), so a message written
into a connection that then died is re-sent on the next one. Nothing is dropped
while the worker lives: this is the docs/protocol.md invariant.
"""

from __future__ import annotations

import collections
import itertools

import attrs
import trio

from ozw.wire.codec import WorkerMessage


@attrs.frozen
class Entry:
    seq: int
    message: WorkerMessage


class Outbox:
    """An ordered, unbounded queue with confirm-on-ack semantics."""

    def __init__(self) -> None:
        self._entries: collections.deque[Entry] = collections.deque()
        self._next_seq = 0
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def pending(self) -> list[WorkerMessage]:
        """Messages not yet confirmed, oldest first."""
        return [entry.message for entry in self._entries]

    def put(self, message: WorkerMessage) -> None:
        """Queue a message; never blocks, never drops."""
        self._entries.append(Entry(self._next_seq, message))
        self._next_seq += 1
        self._notify()

    def first_unconfirmed_seq(self) -> int:
        """Where a new connection's writer starts: the oldest unconfirmed entry."""
        return self._entries[0].seq if self._entries else self._next_seq

    async def wait_from(self, seq: int) -> list[Entry]:
        """Wait until entries numbered ``seq`` or later exist and return them, in order."""
        while not self._entries or self._entries[-1].seq < seq:
            await self._changed.wait()
        # Sequence numbers are contiguous: skip the older entries without looking at
        # them (thousands may wait for their confirmation under load).
        skip = max(0, seq - self._entries[0].seq)
        return list(itertools.islice(self._entries, skip, None))

    def confirm_through(self, seq: int) -> None:
        """The server has read every entry up to ``seq``: forget them."""
        while self._entries and self._entries[0].seq <= seq:
            self._entries.popleft()
        self._notify()

    async def wait_empty(self) -> None:
        """Wait until every queued message has been confirmed."""
        while self._entries:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class WriteProgress:
    """How far one connection's writer has written: what its confirmer waits on."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        """The last sequence number written (-1 before the first)."""
        self._changed = trio.Event()

    def advance(self, seq: int) -> None:
        self.seq = seq
        self._changed.set()
        self._changed = trio.Event()

    async def wait_beyond(self, seq: int) -> None:
        """Wait until something after ``seq`` has been written."""
        while self.seq <= seq:
            await self._changed.wait()
