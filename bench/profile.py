"""Where the time goes: a pyinstrument profile folded into the worker's parts.

Each sample's time goes to the innermost frame on its stack that names a part (see
``PARTS``); a sample inside no named part is Trio's scheduler and everything else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pyinstrument import Profiler
from pyinstrument.frame import Frame

PARTS: tuple[tuple[str, str, str], ...] = (
    # (part, file path fragment, function name; "" = any function of that file)
    ("worker: decode", "ozw/wire/codec.py", "decode_server_message"),
    ("worker: params", "ozw/tasks/params.py", ""),
    ("worker: claim (supervisor)", "ozw/tasks/supervisor.py", "_assign"),
    ("worker: lifecycle", "ozw/tasks/supervisor.py", "_run_task"),
    ("worker: lifecycle", "ozw/tasks/lifecycle.py", ""),
    ("worker: metrics", "ozw/telemetry/metrics.py", ""),
    ("worker: outbox → socket", "ozw/link/connection.py", "_write"),
    ("worker: outbox → socket", "ozw/link/connection.py", "_confirm"),
    ("worker: outbox → socket", "ozw/link/outbox.py", ""),
    ("worker: read loop", "ozw/link/connection.py", "_read"),
    ("logging (both sides)", "/logging/", ""),
    ("logging (both sides)", "ozw/telemetry/logs.py", ""),
    ("websocket frames (both sides)", "ozw/link/websocket.py", ""),
    ("websocket frames (both sides)", "trio_websocket/", ""),
    ("websocket frames (both sides)", "wsproto/", ""),
    ("dispatch server + benchmark", "ozw/dev/server.py", ""),
    ("dispatch server + benchmark", "bench/", ""),
)
OTHER = "trio scheduler, other"


def _part(frame: Frame) -> str | None:
    path = frame.file_path or ""
    for part, fragment, function in PARTS:
        if fragment in path and (not function or frame.function == function):
            return part
    return None


def fold(root: Frame) -> dict[str, float]:
    """Seconds per part over the whole tree under ``root``."""
    totals: dict[str, float] = {}

    def walk(frame: Frame, current: str) -> None:
        part = _part(frame) or current
        children_time = sum(child.time for child in frame.children)
        totals[part] = totals.get(part, 0.0) + max(0.0, frame.time - children_time)
        for child in frame.children:
            walk(child, part)

    walk(root, OTHER)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


@contextlib.contextmanager
def profiled() -> Iterator[dict[str, float]]:
    """Profile the block; the yielded dict is filled with seconds per part at its end."""
    parts: dict[str, float] = {}
    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    try:
        yield parts
    finally:
        session = profiler.stop()
        root = session.root_frame()
        if root is not None:
            parts.update(fold(root))
