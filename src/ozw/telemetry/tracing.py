"""Task traces: the Go worker's ``oz_worker.task`` span, with a child span per phase.

With ``OTEL_TRACES_EXPORTER`` set, each task gets one span ``oz_worker.task``
(attributes ``task.id`` and ``task.title``; the Go worker's lifecycle events; status
Ok, or Error with the failure reason and the failure recorded as an exception), as
the Go worker's, and more: child spans ``claim``, ``setup``, ``execute``,
``teardown`` and ``report``, the execution id and backend as attributes, the
failure's cause as an event. Without it every call here is a no-op on
:data:`NO_TRACE`.

Nothing secret reaches a span: the task's environment values and the API key are
replaced by ``[redacted]`` in every text attribute (:func:`scrub`). Spans carry
explicit parents (no context variables), so Trio's tasks need no context plumbing.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Final, Protocol

from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode, Tracer, set_span_in_context

from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.tasks.params import TaskParams
from ozw.wire.messages import REJECT_LABELS, TaskAssignment

TASK_SPAN: Final = "oz_worker.task"
REDACTED: Final = "[redacted]"
MIN_SECRET: Final = 6
"""Shorter values (``1``, ``yes``) are not redacted: they would shred every text."""

END_EVENTS: Final = {  # by TaskResult value; detached is ozw's own
    "completed": "task.completed",
    "cancelled": "task.cancelled",
    "handed_off": "task.dispatched",
    "detached": "task.detached",
}

AttributeValue = str | int | bool


class Ending(Protocol):
    """How a task ended (:class:`~ozw.tasks.lifecycle.TaskOutcome`, which imports this
    module, hence a protocol)."""

    @property
    def result(self) -> enum.StrEnum: ...
    @property
    def reason(self) -> FailureReason | None: ...
    @property
    def cause(self) -> str | None: ...
    @property
    def teardown_failed(self) -> bool: ...
    @property
    def failure_phase(self) -> str: ...


def scrub(text: str, secrets: Collection[str]) -> str:
    """``text`` with every secret value in it replaced by :data:`REDACTED`."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET:
            text = text.replace(secret, REDACTED)
    return text


class TaskTrace:
    """The spans of one task execution; every method is a no-op when tracing is off."""

    def __init__(
        self,
        tracer: Tracer | None,
        task_id: str,
        attributes: Mapping[str, AttributeValue],
        secrets: Collection[str] = (),
    ) -> None:
        self.secrets = secrets
        self.span: Span = INVALID_SPAN
        if tracer is not None:
            self.span = tracer.start_span(
                TASK_SPAN, attributes={"task.id": task_id, **self._clean(attributes)}
            )
        self.tracer = tracer

    def _clean(self, attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
        return {
            key: scrub(value, self.secrets) if isinstance(value, str) else value
            for key, value in attributes.items()
        }

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        if self.tracer is not None:
            self.span.add_event(name, self._clean(attributes or {}))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """A child span around one phase; a failure in it is recorded there too."""
        if self.tracer is None:
            yield
            return
        child = self.tracer.start_span(name, context=set_span_in_context(self.span))
        try:
            yield
        except Exception as exc:
            child.set_status(Status(StatusCode.ERROR, scrub(_reason_of(exc), self.secrets)))
            raise
        except BaseException:
            child.add_event("phase.stopped")
            raise
        finally:
            child.end()

    def finish(self, outcome: Ending) -> None:
        """End the task span: status, the end event, and a failure's cause."""
        if self.tracer is None:
            return
        if outcome.teardown_failed:
            self.event("teardown.failed", {"failure.phase": "cleanup", "failure.reason": "cleanup"})
        result, reason = outcome.result.value, outcome.reason
        if reason is None:
            self.event(END_EVENTS.get(result, f"task.{result}"))
            # Ok carries no description (OpenTelemetry drops Go's too).
            self.span.set_status(Status(StatusCode.OK))
        else:
            text = scrub(outcome.cause or reason.value, self.secrets)
            self.event(
                "task.failed",
                {
                    "failure.phase": outcome.failure_phase,
                    "failure.reason": reason.value,
                    "error.message": text,
                },
            )
            self.span.record_exception(TaskFailure(reason, text))
            self.span.set_status(Status(StatusCode.ERROR, reason.value))
        self.span.end()

    def reject(self, reason: str) -> None:
        """End the span of an assignment the worker rejected (as Go does)."""
        self.event("task.rejected", {"reason": REJECT_LABELS.get(reason, reason)})
        self.span.end()


def _reason_of(exc: Exception) -> str:
    return exc.reason.value if isinstance(exc, TaskFailure) else type(exc).__name__


NO_TRACE: Final = TaskTrace(None, "", {})


class WorkerTracer:
    """Opens task traces with the worker's identity and secrets; None = traces off."""

    def __init__(
        self, tracer: Tracer | None, *, worker_id: str, backend: str, secrets: Collection[str]
    ) -> None:
        self.tracer = tracer
        self.worker_id = worker_id
        self.backend = backend
        self.secrets = tuple(secrets)

    def assigned(self, assignment: TaskAssignment) -> TaskTrace:
        """The trace of an assignment just received (the Go worker's ``task.assigned``)."""
        return self._open(
            "task.assigned",
            assignment.task_id,
            assignment.task.title,
            assignment.execution_id,
            assignment.env_vars.values(),
        )

    def reattached(self, params: TaskParams) -> TaskTrace:
        """The trace of a task an earlier run of the worker started (ozw's own)."""
        title = params.task.get("title")
        return self._open(
            "task.reattached",
            params.task_id,
            title if isinstance(title, str) else None,
            params.execution_id,
            params.env.values(),
        )

    def _open(
        self,
        event: str,
        task_id: str,
        title: str | None,
        execution_id: str | None,
        task_secrets: Iterable[str],
    ) -> TaskTrace:
        if self.tracer is None:
            return NO_TRACE
        attributes: dict[str, AttributeValue] = {
            "task.title": title or "",
            "worker.backend": self.backend,
        }
        if execution_id:
            attributes["task.execution_id"] = execution_id
        task = TaskTrace(self.tracer, task_id, attributes, (*self.secrets, *task_secrets))
        task.event(
            event, {"worker.id": self.worker_id, "worker.backend": self.backend, "task.id": task_id}
        )
        return task


NO_TRACER: Final = WorkerTracer(None, worker_id="", backend="", secrets=())
