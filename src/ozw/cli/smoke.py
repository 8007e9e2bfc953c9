"""``ozw smoke``: prove an operator's real configuration runs a task, in CI.

An embedded dispatch server on 127.0.0.1 stands in for Oz; the configured backend
runs one assignment (a built-in sample, or a JSON file holding an assignment's
``data``), its images overridable for air-gapped sites. Exit 0 only when the task
completed (or, on the command backend, was handed off); otherwise the outcome and
the agent's last output lines are printed. ``--timeout`` is the task's time limit:
past it the worker stops the task as a ``task_timeout`` (the agent gets the backend's
``kill_grace``), so a hung task is reported within ``timeout + kill_grace``.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import secrets
import sys
from pathlib import Path
from typing import IO, Any

import attrs
import trio

from ozw.backends import create_backend
from ozw.cli.exit_status import EXIT_INTERRUPTED
from ozw.config import DockerConfig, WorkerConfig, format_duration
from ozw.dev.local import open_local_worker
from ozw.tasks.failures import BackendUnavailable, FailureReason
from ozw.tasks.lifecycle import TaskOutcome, TaskResult
from ozw.tasks.params import AGENT_SIDECAR, TaskParams
from ozw.telemetry.logs import LOGGER_NAME, escape_controls
from ozw.wire.codec import ProtocolError, TaskAssignment, decode_server_message, encode_message

TAIL_LINES = 20
SAMPLE_PROMPT = "echo ozw smoke test: hello from the agent"
HUNG_BACKEND_MARGIN = 30.0
"""Past ``timeout + kill_grace``, how long a stopped task's teardown may take."""
"""The agent sidecar the Oz server names in its assignments (container backends)."""


class SmokeError(Exception):
    """The smoke run could not even start (bad task file, backend unavailable)."""


@attrs.frozen
class ImageOverrides:
    """``--image`` / ``--sidecar-image``: what the assignment names, replaced."""

    image: str | None = None
    sidecar_image: str | None = None

    def local_config(self, config: WorkerConfig) -> tuple[WorkerConfig, str | None]:
        """The configuration to run with, and a note when it was changed.

        An image named on the command line is one the operator has at hand: under
        ``pull_policy = "always"`` docker would still pull it (and an offline site, or an
        image built locally, fails), so such a smoke run uses what is present and pulls
        only what is missing.
        """
        backend = config.backend
        if not (self.image or self.sidecar_image) or not isinstance(backend, DockerConfig):
            return config, None
        if backend.pull_policy != "always":
            return config, None
        note = (
            'smoke: --image/--sidecar-image given: pull_policy "always" is taken as '
            '"if-not-present" for this run (local images are used, missing ones pulled)'
        )
        local = attrs.evolve(backend, pull_policy="if-not-present")
        return attrs.evolve(config, backend=local), note

    def apply(self, assignment: TaskAssignment) -> TaskAssignment:
        return attrs.evolve(
            assignment,
            docker_image=self.image or assignment.docker_image,
            sidecar_image=self.sidecar_image or assignment.sidecar_image,
        )


def kill_grace_of(config: WorkerConfig) -> float:
    """How long the backend gives a stopped agent before killing it (0 if it has none)."""
    grace = getattr(config.backend, "kill_grace", 0.0)
    return float(grace)


def sample_assignment(config: WorkerConfig) -> TaskAssignment:
    """A small task every backend can run; the stand-in agent reads its prompt from env."""
    task_id = f"smoke-{secrets.token_hex(4)}"
    data: dict[str, Any] = {
        "task_id": task_id,
        "execution_id": f"exec-{task_id}",
        "task": {"id": task_id, "title": "ozw smoke test"},
        "env_vars": {"OZ_STANDIN_PROMPT": SAMPLE_PROMPT},
    }
    if config.backend_name in ("docker", "kubernetes"):
        data["sidecar_image"] = AGENT_SIDECAR
    return _decode_assignment(data, "the built-in sample")


def load_assignment(path: Path) -> TaskAssignment:
    """Read an assignment's ``data`` object (or a whole frame) from a JSON file."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SmokeError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SmokeError(f"{path}: not JSON: {exc}") from None
    if isinstance(obj, dict) and "type" in obj:
        obj = obj.get("data")
    return _decode_assignment(obj, str(path))


def _decode_assignment(data: Any, where: str) -> TaskAssignment:
    try:
        message = decode_server_message(json.dumps({"type": "task_assignment", "data": data}))
    except ProtocolError as exc:
        raise SmokeError(f"{where}: {exc}") from None
    assert isinstance(message, TaskAssignment)
    return message


class _TailHandler(logging.Handler):
    """Keeps the last output lines of one task's processes."""

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "task_id", None) == self.task_id and getattr(record, "stream", None):
            self.lines.append(f"[{record.stream}] {record.getMessage()}")  # type: ignore[attr-defined]


@attrs.define
class SmokeResult:
    outcome: TaskOutcome | None = None
    duration: float = 0.0
    tail: list[str] = attrs.field(factory=list)
    hung: bool = False
    """No outcome by ``timeout + kill_grace`` and a margin: the backend does not answer."""
    interrupted: bool = False
    """A signal stopped the worker before the task ended on its own."""


async def run_smoke(
    config: WorkerConfig, assignment: TaskAssignment, timeout: float
) -> SmokeResult:
    """Run one assignment through a real worker and the configured backend."""
    result = SmokeResult()
    ended = trio.Event()
    tail = _TailHandler(assignment.task_id)
    logging.getLogger(LOGGER_NAME).addHandler(tail)
    try:
        backend = create_backend(config)
        # The worker itself stops the task at the deadline, teardown included, and
        # reports why; the smoke run waits past that only for a backend that hangs.
        local_config = attrs.evolve(config, api_key=secrets.token_urlsafe(16), task_timeout=timeout)
        async with (
            open_local_worker(local_config, backend, handle_signals=True) as local,
            trio.open_nursery() as watchers,
        ):

            def on_finished(params: TaskParams, outcome: TaskOutcome, duration: float) -> None:
                if params.task_id == assignment.task_id and not result.hung:
                    result.outcome, result.duration = outcome, duration
                    ended.set()

            local.worker.supervisor.events.on_finished.append(on_finished)
            # Ctrl-C stops the worker, perhaps before the task was even claimed.
            watchers.start_soon(_set_when_set, local.stopped, ended)
            await local.server.send(encode_message(assignment))
            with trio.move_on_after(timeout + kill_grace_of(config) + HUNG_BACKEND_MARGIN):
                await ended.wait()
            result.hung = not ended.is_set()
            # Only a signal stops the worker (and so the task) before this point.
            stopped_early = local.stopped.is_set() or (
                result.outcome is not None
                and result.outcome.reason is FailureReason.GRACEFUL_SHUTDOWN
            )
            result.interrupted = stopped_early and not result.hung
            local.worker.request_stop("smoke run over" if not result.hung else "smoke run hung")
            watchers.cancel_scope.cancel()
    finally:
        logging.getLogger(LOGGER_NAME).removeHandler(tail)
    result.tail = list(tail.lines)
    return result


async def _set_when_set(source: trio.Event, target: trio.Event) -> None:
    await source.wait()
    target.set()


def smoke_main(
    config: WorkerConfig,
    *,
    task_file: str | None,
    timeout: float,
    images: ImageOverrides = ImageOverrides(),
    out: IO[str] = sys.stdout,
) -> int:
    """The ``ozw smoke`` command; returns the exit code."""
    try:
        assignment = load_assignment(Path(task_file)) if task_file else sample_assignment(config)
        assignment = images.apply(assignment)
        config, note = images.local_config(config)
        if note is not None:
            print(note, file=sys.stderr)
        # A shorter task_timeout in the configuration is the limit that applies.
        timeout = min(timeout, config.task_timeout or timeout)
        result = trio.run(functools.partial(run_smoke, config, assignment, timeout))
    except (SmokeError, BackendUnavailable) as exc:
        print(f"ozw: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, SmokeError) else 1
    outcome = result.outcome
    task_id = escape_controls(assignment.task_id)
    if result.interrupted:
        print(f"smoke: interrupted: task {task_id} was stopped before it ended", file=out)
        return EXIT_INTERRUPTED
    if outcome is None:
        grace = format_duration(kill_grace_of(config))
        print(
            f"smoke: FAILED: task {task_id} did not stop within {format_duration(timeout)} "
            f"and {grace} of kill grace (the backend does not answer)",
            file=out,
        )
    elif outcome.reason is FailureReason.TASK_TIMEOUT:
        print(
            f"smoke: FAILED: task {task_id} timed out after {format_duration(timeout)} "
            f"(stopped and reported in {result.duration:.1f}s)",
            file=out,
        )
    elif outcome.result in (TaskResult.COMPLETED, TaskResult.HANDED_OFF):
        print(f"smoke: ok: task {task_id} {outcome.result} in {result.duration:.1f}s", file=out)
        return 0
    else:
        detail = outcome.message.message if outcome.message is not None else ""
        reason = f" ({outcome.reason.value})" if outcome.reason else ""
        code = f", exit code {outcome.exit_code}" if outcome.exit_code is not None else ""
        print(f"smoke: FAILED: task {task_id} {outcome.result}{reason}{code}: {detail}", file=out)
    if result.tail:
        print("last output lines:", file=out)
        for line in result.tail:
            print(f"  {line}", file=out)
    return 1


__all__ = ["ImageOverrides", "SmokeError", "run_smoke", "smoke_main"]
