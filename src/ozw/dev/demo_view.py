"""What ``ozw demo`` shows: each task's state, and what the dispatch server did.

On a terminal it is one ``rich`` live view redrawn in place: a table with fixed
column widths that fits the terminal's width (every row one line, so a redraw never
leaves a stacked copy behind), coloured unless ``NO_COLOR`` is set, and the server's
latest actions under it. Elsewhere (a pipe, CI) each change is one plain line and
the table is printed once at the end.
"""

from __future__ import annotations

import collections
import os
from typing import IO, Final, Self

import attrs
import trio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ozw.dev.server import Received
from ozw.wire.codec import TaskClaimed, TaskCompleted, TaskFailed, TaskRejected

STATE_STYLES: Final = {
    "assigned": "dim",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "rejected": "magenta",
}
FIXED_WIDTHS: Final = {"task": 19, "outcome": 9, "exit": 4, "time": 6}
REASON_WIDTHS: Final = (8, 40)
"""The reason column's narrowest and widest: it takes what the terminal has left."""
COLUMN_GAP: Final = 2
SERVER_ACTIONS_SHOWN: Final = 6
CANCELLED_BY_SERVER: Final = "by the server"


@attrs.define
class Row:
    task_id: str
    title: str
    state: str = "assigned"
    reason: str = ""
    exit_code: str = ""
    started: float | None = None
    ended: float | None = None

    def duration(self, now: float) -> str:
        if self.started is None:
            return ""
        end = self.ended if self.ended is not None else now
        return f"{end - self.started:.1f}s"


def make_console(out: IO[str], environ: dict[str, str] | None = None) -> Console:
    """A console on ``out``; colourless when ``NO_COLOR`` is set (no-color.org)."""
    env = os.environ if environ is None else environ
    no_color = bool(env.get("NO_COLOR"))
    # color_system=None renders no style codes at all (rich's no_color keeps bold).
    return Console(
        file=out, color_system=None if no_color else "auto", highlight=False, markup=False
    )


def reason_width(terminal_width: int) -> int:
    """The reason column's width: what the fixed columns and their gaps leave, in bounds."""
    used = sum(FIXED_WIDTHS.values()) + COLUMN_GAP * len(FIXED_WIDTHS)
    return max(REASON_WIDTHS[0], min(REASON_WIDTHS[1], terminal_width - used))


def outcome_table(rows: list[Row], now: float, terminal_width: int) -> Table:
    """The table of tasks: fixed widths that fit the terminal, one line per row."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    widths = {**FIXED_WIDTHS, "reason": reason_width(terminal_width)}
    for name in ("task", "outcome", "reason", "exit", "time"):
        table.add_column(
            name,
            width=widths[name],
            justify="right" if name in ("exit", "time") else "left",
            no_wrap=True,
            overflow="ellipsis",
        )
    for row in rows:
        style = STATE_STYLES.get(row.state, "")
        table.add_row(
            row.task_id,
            Text(row.state, style=style),
            row.reason,
            row.exit_code,
            row.duration(now),
        )
    return table


class StatusView:
    """Per-task status and the server's actions, live on a terminal, plain otherwise."""

    def __init__(self, console: Console, *, live: bool) -> None:
        self.console = console
        self.live = live
        self.rows: dict[str, Row] = {}
        self.actions: collections.deque[str] = collections.deque(maxlen=SERVER_ACTIONS_SHOWN)
        self._cancelled_by_server: set[str] = set()
        self._live: Live | None = None

    def __enter__(self) -> Self:
        if self.live:
            # Redrawn by the demo's own ticks: no refresh thread beside Trio.
            self._live = Live(
                self.render(), console=self.console, auto_refresh=False, transient=False
            )
            self._live.start(refresh=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
            self._live.stop()
            self._live = None

    def server_action(self, text: str) -> None:
        """Something the dispatch server did (assign, cancel), shown under the table."""
        self.actions.append(text)
        if self.live:
            self.redraw()
        else:
            self.console.print(f"server: {text}", soft_wrap=True)

    def assigned(self, task_id: str, title: str) -> None:
        self.rows[task_id] = Row(task_id, title)
        self.server_action(f"assigns {task_id} ({title})")

    def cancelling(self, task_id: str) -> None:
        self._cancelled_by_server.add(task_id)
        self.server_action(f"cancels {task_id}")

    def on_message(self, item: Received) -> None:
        message = item.message
        row = self.rows.get(message.task_id)
        if row is None:
            return
        now = trio.current_time()
        match message:
            case TaskClaimed():
                row.state, row.started = "running", now
            case TaskRejected():
                row.state, row.reason = "rejected", message.reason
            case TaskCompleted(task_state="CANCELLED"):
                row.state, row.ended = "cancelled", now
                row.reason = (
                    CANCELLED_BY_SERVER
                    if message.task_id in self._cancelled_by_server
                    else message.message or ""
                )
            case TaskCompleted():
                row.state, row.ended = "completed", now
            case TaskFailed():
                row.state, row.ended, row.reason = "failed", now, message.failure_reason
                row.exit_code = "" if message.exit_code is None else str(message.exit_code)
        if self.live:
            self.redraw()
        else:
            extra = ", ".join(
                x for x in (row.reason, row.exit_code and f"exit {row.exit_code}") if x
            )
            self.console.print(
                f"{row.task_id:<22} {row.state}{f' ({extra})' if extra else ''}",
                soft_wrap=True,
            )

    def redraw(self) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)

    def render(self) -> RenderableType:
        now = trio.current_time()
        server = [Text("server", style="bold")]
        server += [
            Text(f"  {action}", no_wrap=True, overflow="ellipsis") for action in self.actions
        ]
        return Group(
            outcome_table(list(self.rows.values()), now, self.console.width),
            Text(""),
            *server,
        )

    def print_table(self) -> None:
        """The final table (plain output: the live view already shows it)."""
        self.console.print()
        self.console.print(
            outcome_table(list(self.rows.values()), trio.current_time(), self.console.width)
        )
