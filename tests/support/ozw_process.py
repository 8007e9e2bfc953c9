"""Run a real ``ozw`` process and follow its log lines as events."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[2]
STANDIN_AGENT = REPO / "examples" / "agent" / "oz"


class OzwProcess:
    """``python -m ozw ...`` with its stderr read line by line."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self.args = args
        self.env = dict(env)
        self.lines: list[str] = []
        self.process: trio.Process | None = None
        self._changed = trio.Event()
        self.exited = trio.Event()
        self.returncode: int | None = None

    async def run(
        self, *, task_status: trio.TaskStatus[OzwProcess] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "ozw", *self.args],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            task_status.started(self)
            nursery.start_soon(self._read)
            try:
                self.returncode = await self.process.wait()
            finally:
                with trio.CancelScope(shield=True):
                    if self.process.returncode is None:
                        os.killpg(self.process.pid, signal.SIGKILL)
                        await self.process.wait()
            self.exited.set()
            self._notify()

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        pending = b""
        async for chunk in self.process.stderr:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self.lines.append(line.decode(errors="replace"))
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_line(self, pattern: str) -> str:
        """Wait for a log line matching ``pattern`` (a regular expression)."""
        regex = re.compile(pattern)
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if regex.search(line):
                    return line
            seen = len(self.lines)
            if self.exited.is_set():
                raise AssertionError(
                    f"ozw exited before logging {pattern!r}:\n" + "\n".join(self.lines)
                )
            await self._changed.wait()

    def send_signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self) -> int:
        await self.exited.wait()
        assert self.returncode is not None
        return self.returncode

    @property
    def log(self) -> str:
        return "\n".join(self.lines)
