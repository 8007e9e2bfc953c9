"""Lines of a child process's pipe, read as they come (stdin-driven and stdout-checked runs)."""

from __future__ import annotations

import trio


class LineReader:
    """Lines of a process's pipe, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.pending = b""

    async def next_matching(self, needle: str) -> str:
        with trio.fail_after(60):
            while True:
                while b"\n" in self.pending:
                    line, self.pending = self.pending.split(b"\n", 1)
                    if needle in line.decode():
                        return line.decode()
                chunk = await self.stream.receive_some()
                if not chunk:
                    raise AssertionError(f"the stream ended before a line with {needle!r}")
                self.pending += chunk
