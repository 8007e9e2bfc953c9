"""Capture the ``ozw`` log in tests, with events on exact messages."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import pytest


class Lines(logging.Handler):
    """Collects the ``ozw`` log records and fires events on exact messages."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._waiters: list[tuple[str, anyio.Event]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        message = record.getMessage()
        for text, event in self._waiters:
            if message == text:
                event.set()

    def event(self, text: str) -> anyio.Event:
        """An event set when a record with exactly this message arrives."""
        event = anyio.Event()
        self._waiters.append((text, event))
        return event

    def stream(self, name: str) -> list[str]:
        """The relayed lines of one stream (e.g. ``agent stdout``), any task."""
        return [r.getMessage() for r in self.records if getattr(r, "stream", None) == name]

    def output(self, task_id: str, stream: str) -> list[str]:
        """The relayed lines of one task's stream."""
        return [
            r.getMessage()
            for r in self.records
            if getattr(r, "task_id", None) == task_id and getattr(r, "stream", None) == stream
        ]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("ozw")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
