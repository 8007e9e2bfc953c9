"""Operator-facing logging: one line per event, task id on every task line.

``human`` is ``2026-11-24T13:50:36.123Z INFO  task=run-1 message``; ``json`` is one
object per line with ``time``, ``level``, ``logger``, ``message``, ``worker_id`` and
the line's structured fields: on task lines ``task_id`` and ``execution_id``, on
lifecycle lines ``event`` (``claimed``, ``rejected``, ``finished``, ...) and, when
a task ends, ``result``, ``reason``, ``exit_code`` and ``duration_s``; ``stream``
on relayed output.
"""

from __future__ import annotations

import contextvars
import json
import logging
import shlex
import sys
import time
from collections.abc import MutableMapping, Sequence
from typing import IO, Any, Final

LOGGER_NAME: Final = "ozw"
WORKER_ID: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "ozw_worker_id", default=None
)
"""The worker whose code is logging (set by ``Worker.run``; Trio tasks inherit it)."""
_STANDARD_ATTRS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "task_id",
    "stream",
}


_CONTROL: Final = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\t",
}
"""Control characters escaped in human lines: a hostile task id or agent output line
must not forge log lines or drive the terminal (tabs stay readable)."""


def escape_controls(text: str) -> str:
    """``text`` with newlines and other control characters shown as escapes."""
    return text.translate(_CONTROL)


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class HumanFormatter(logging.Formatter):
    """``time LEVEL [task=<id>] [stream] message``; exceptions stay one line unless debugging."""

    def __init__(self, *, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), f"{record.levelname:<5}"]
        task_id = getattr(record, "task_id", None)
        if task_id is not None:
            parts.append(f"task={task_id}")
        stream = getattr(record, "stream", None)
        if stream is not None:
            parts.append(f"[{stream}]")
        parts.append(record.getMessage())
        line = escape_controls(" ".join(parts))
        if record.exc_info and self.tracebacks:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        worker_id = WORKER_ID.get()
        if worker_id is not None:
            obj["worker_id"] = worker_id
        for key in ("task_id", "stream"):
            value = getattr(record, key, None)
            if value is not None:
                obj[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and value is not None:
                obj[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


def configure_logging(
    level: str = "info", fmt: str = "human", stream: IO[str] | None = None
) -> None:
    """Send the ``ozw`` loggers to ``stream`` (stderr by default) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    numeric = logging.getLevelName(level.upper())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(HumanFormatter(tracebacks=numeric == logging.DEBUG))
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    root.propagate = False


def log_command(
    log: logging.Logger | logging.LoggerAdapter[logging.Logger], argv: Sequence[str]
) -> None:
    """At debug level, the command line a backend is about to run.

    Callers never put a secret value in a command line (values travel in the
    environment or an env-file), so the line is shown as it is.
    """
    if log.isEnabledFor(logging.DEBUG):
        log.debug("run: %s", shlex.join(argv), extra={"event": "command"})


class TaskLog(logging.LoggerAdapter[logging.Logger]):
    """A logger that stamps every line with a task id (and its execution id, if any)."""

    def __init__(
        self,
        task_id: str,
        logger: logging.Logger | None = None,
        *,
        execution_id: str | None = None,
    ) -> None:
        stamp: dict[str, object] = {"task_id": task_id}
        if execution_id is not None:
            stamp["execution_id"] = execution_id
        super().__init__(logger or logging.getLogger(f"{LOGGER_NAME}.task"), stamp)
        self.task_id = task_id
        self.execution_id = execution_id

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        # The stamp and the line's own fields together (the stock adapter drops the latter).
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs

    def output(self, stream: str, line: str) -> None:
        """Relay one line of a task's process output."""
        self.info("%s", line, extra={"stream": stream})
