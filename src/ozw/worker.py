"""The worker process: one Trio nursery tree from start-up check to exit code.

::

    Worker.run (root nursery)
    ├── signals      SIGINT/SIGTERM: stop (cancel, teardown, report); again: kill now;
    │                SIGQUIT: drain (no new work, running tasks finish); SIGHUP: ignored
    ├── connection   dial, read, single writer, heartbeat; reconnects
    └── supervisor   one child per task: setup → execute → teardown
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Final

import trio

from ozw.backends.base import Backend
from ozw.config import KubernetesConfig, WorkerConfig, resolve_environment
from ozw.link.connection import UNAUTHORISED, Connection, ConnectionSettings, Lost
from ozw.link.outbox import Outbox
from ozw.link.proxy import choose_proxy
from ozw.tasks.deadlines import CLOSE_WAIT, FLUSH_TIMEOUT, FORCED_FLUSH, FORCED_WAIT
from ozw.tasks.failures import BackendUnavailable, FailureReason, StartupError
from ozw.tasks.params import ParamSettings
from ozw.tasks.supervisor import Supervisor, SupervisorSettings
from ozw.telemetry.export import flush, metric_readers, quiet_sdk_logs, tracer_provider
from ozw.telemetry.logs import WORKER_ID
from ozw.telemetry.metrics import (
    SCOPE_NAME,
    WorkerMetrics,
    bind_http,
    ozw_version,
    serve_http,
    worker_resource,
)
from ozw.telemetry.otel_env import OtelPlan, OtelSettingError, read_plan
from ozw.telemetry.tracing import WorkerTracer
from ozw.wire.codec import prepare as prepare_protocol

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STARTUP = 1
EXIT_FORCED = 130


class Worker:
    """A worker: connection + supervisor + signal handling, stopping gracefully."""

    def __init__(
        self,
        config: WorkerConfig,
        backend: Backend,
        *,
        connection_settings: ConnectionSettings | None = None,
        flush_timeout: float = FLUSH_TIMEOUT,
        otel: OtelPlan | None = None,
    ) -> None:
        self.config = config
        self.otel = otel or OtelPlan()
        self.backend = backend
        self.outbox = Outbox()
        self.flush_timeout = flush_timeout
        default_image = getattr(config.backend, "default_image", None)
        self.supervisor = Supervisor(
            SupervisorSettings(
                worker_id=config.worker_id,
                params=ParamSettings(
                    server_root_url=config.server.root_url,
                    default_image=default_image,
                    idle_on_complete=config.idle_on_complete,
                    session_sharing_server_url=config.server.session_sharing_server_url,
                    shape_failure=FailureReason.JOB_CREATE
                    if isinstance(config.backend, KubernetesConfig)
                    else FailureReason.CONTAINER_CREATE,
                ),
                max_concurrent_tasks=config.max_concurrent_tasks,
                task_timeout=config.task_timeout,
                max_tasks=config.max_tasks,
            ),
            backend,
            self.outbox,
        )
        self.connection = Connection(
            connection_settings
            or ConnectionSettings(
                websocket_url=config.server.websocket_url,
                worker_id=config.worker_id,
                api_key=config.api_key or "",
                # ``ozw run`` has checked the proxy settings (ProxySettingError) already.
                proxy=choose_proxy(
                    config.server.websocket_url, config.server.proxy_url, os.environ
                ),
            ),
            self.outbox,
            self.supervisor.handle,
        )
        if self.otel.metrics != "none" or self.otel.traces != "none":
            quiet_sdk_logs()
        resource = worker_resource(
            worker_id=config.worker_id, backend=backend.name, version=ozw_version()
        )
        self.metrics = WorkerMetrics(
            worker_id=config.worker_id,
            backend=backend.name,
            max_concurrent=config.max_concurrent_tasks,
            readers=metric_readers(self.otel),
            resource=resource,
        )
        self.tracer_provider = tracer_provider(self.otel, resource)
        provider = self.tracer_provider
        self.supervisor.tracer = WorkerTracer(
            provider.get_tracer(SCOPE_NAME) if provider is not None else None,
            worker_id=config.worker_id,
            backend=backend.name,
            secrets=_secrets(config),
        )
        events = self.supervisor.events
        events.on_claimed.append(self.metrics.on_claimed)
        events.on_rejected.append(self.metrics.on_rejected)
        events.on_finished.append(self.metrics.on_finished)
        self.connection.on_state_change = self._connection_changed
        self.connection.on_lost = self.metrics.on_lost
        self.connection.on_failure = self._connection_failed
        self.unauthorised: str | None = None
        """Why the server rejects the API key, until a connection succeeds (for /healthz)."""
        self.failure: str | None = None
        """Why the worker gave up (its exit code is then 1); one line for the operator."""
        if config.max_tasks is not None:
            events.on_finished.append(self._stop_after_max_tasks)
        self.metrics_port: int | None = None
        self.exit_code = EXIT_OK
        self._stop = trio.Event()
        self._ending = trio.Event()
        """Set by a stop or a drain: the worker takes no new work and will exit."""
        self._drain_scope: trio.CancelScope | None = None
        self._forced = trio.Event()
        self._shutdown_scope = trio.CancelScope()

    def _connection_changed(self, connected: bool, why: str) -> None:
        if connected:
            self.unauthorised = None
        self.metrics.on_connection(connected, why)

    def _connection_failed(self, lost: Lost) -> None:
        """A rejected key does not fix itself: a one-shot worker (``--once``, ``--max-tasks``)
        gives up at once with the fix; a daemon keeps dialling, as the Go worker does,
        and says "unauthorised" on /healthz (docs/operations.md)."""
        if lost.kind != UNAUTHORISED:
            return
        self.unauthorised = lost.text
        if self.config.max_tasks is not None and self.failure is None:
            self.failure = lost.text
            self.exit_code = EXIT_STARTUP
            self.request_stop("the server rejected the API key")

    def health_problem(self) -> str | None:
        """What /healthz reports while unhealthy (None: connected)."""
        if self.connection.connected:
            return None
        if self.unauthorised is not None:
            return f"unauthorised: {self.unauthorised}"
        return "not connected"

    def _stop_after_max_tasks(self, *_: object) -> None:
        if self.supervisor.finished >= (self.config.max_tasks or 0) and not self.supervisor.active:
            self.request_stop(f"finished {self.supervisor.finished} task(s) (--max-tasks)")

    def request_stop(self, why: str = "asked to stop") -> None:
        """Graceful stop: no new work, cancel running tasks, let teardown run."""
        if not self._stop.is_set():
            log.info(
                "%s: stopping gracefully (%d running; up to %gs for teardown)",
                why,
                len(self.supervisor.active),
                self.config.shutdown_grace,
            )
            # At once, not when the shutdown task next runs: no assignment slips in.
            self.supervisor.stop_accepting()
            self._stop.set()
            self._ending.set()
            if self._drain_scope is not None:
                self._drain_scope.cancel()

    def request_drain(self, why: str = "asked to drain") -> None:
        """Drain: no new work, running tasks finish as they would, then exit 0."""
        if self._ending.is_set():
            return
        log.info(
            "%s: draining (no new work; %d task(s) finish first; SIGTERM cancels them)",
            why,
            len(self.supervisor.active),
        )
        self.supervisor.stop_accepting()
        self._drain_scope = trio.CancelScope()
        self._ending.set()

    def force_stop(self, why: str = "asked again") -> None:
        """Immediate stop: kill agents and containers now, exit 130."""
        if self._forced.is_set():
            return
        log.warning("%s: stopping now, killing every task", why)
        self.exit_code = EXIT_FORCED
        self._forced.set()
        self._stop.set()
        self._ending.set()
        if self._drain_scope is not None:
            self._drain_scope.cancel()
        self._shutdown_scope.cancel()

    async def run(
        self,
        *,
        handle_signals: bool = True,
        task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED,
    ) -> int:
        """Run until stopped; returns the process exit code.

        Raises:
            StartupError: the backend's start-up check failed, or the metrics address
                cannot be bound.
        """
        WORKER_ID.set(self.config.worker_id)
        # Signals are received from the start; they are acted on once the tasks run.
        with _signal_receiver(handle_signals) as signals:
            return await self._run(signals, task_status)

    async def _run(
        self, signals: AsyncIterator[int] | None, task_status: trio.TaskStatus[Worker]
    ) -> int:
        found = await self.backend.check()
        await self.backend.recover()
        log.info(
            "worker %s starting: backend %s (%s), max concurrent tasks %s",
            self.config.worker_id,
            self.backend.name,
            found,
            self.config.max_concurrent_tasks or "unlimited",
        )
        if self.otel.notice is not None:
            # Loud only when no metrics go anywhere: an operator from Go must notice.
            level = logging.INFO if self.config.metrics_addr else logging.WARNING
            log.log(level, "%s", self.otel.notice)
        addresses = [self.config.metrics_addr] if self.config.metrics_addr else []
        if self.otel.metrics == "prometheus" and self.otel.prometheus_address not in addresses:
            # The same registry either way: one address named twice is served once.
            addresses.append(self.otel.prometheus_address)
        listeners = []
        for address in addresses:
            # Bound before the nursery, so a taken port is one clear line, not a group.
            try:
                listeners.append(await bind_http(address))
            except OSError as exc:
                raise StartupError(
                    f"cannot serve metrics on {address}: {exc.strerror or exc}"
                ) from None
        prepare_protocol()  # not at the first assignment: its claim would be late
        async with trio.open_nursery() as root:
            if signals is not None:
                root.start_soon(self._watch_signals, signals)
            await root.start(self.supervisor.run)
            for adopted in self.backend.reattached():
                self.supervisor.adopt(adopted)
            for bound in listeners:
                port = await root.start(serve_http, self.metrics, self.health_problem, bound)
                self.metrics_port = self.metrics_port or port
            await root.start(self.connection.run)
            task_status.started(self)
            await self._ending.wait()
            if self._drain_scope is not None:
                with self._drain_scope:
                    await self.supervisor.wait_idle()
                if not self._stop.is_set():
                    log.info("drained: every task has finished")
            await self._shutdown()
            root.cancel_scope.cancel()
        return self.exit_code

    async def _watch_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            match signal_action(signum, stopping=self._stop.is_set()):
                case SignalAction.IGNORE:
                    log.info("received %s: ignored (SIGTERM stops the worker)", name)
                case SignalAction.DRAIN:
                    if self._ending.is_set():
                        log.info("received %s: already stopping", name)
                    self.request_drain(f"received {name}")
                case SignalAction.STOP:
                    self.request_stop(f"received {name}")
                    log.info("%s to stop at once", again_hint(signum))
                case SignalAction.FORCE:
                    self.force_stop(f"received {name} again")

    async def _shutdown(self) -> None:
        supervisor = self.supervisor
        supervisor.stop_accepting()
        with self._shutdown_scope:
            if self.backend.reattaches:
                if supervisor.active:
                    log.info(
                        "leaving %d task(s) running for the next start to reattach",
                        len(supervisor.active),
                    )
                self.backend.detach()
            if self.backend.tasks_survive_shutdown:
                log.info("waiting for %d task(s) being handed off", len(supervisor.active))
            else:
                count = supervisor.cancel_all()
                if count:
                    log.info("cancelled %d running task(s); waiting for their teardown", count)
            with trio.move_on_after(self.config.shutdown_grace) as grace:
                await supervisor.wait_idle()
            if grace.cancelled_caught:
                log.warning(
                    "%d task(s) still running after %gs; killing them",
                    len(supervisor.active),
                    self.config.shutdown_grace,
                )
                await self._kill_everything()
            if len(self.outbox) and not self.connection.connected:
                # Results are owed: dial now rather than at the end of a long back-off.
                self.connection.redial_now()
            with trio.move_on_after(self.flush_timeout):
                await self.outbox.wait_empty()
        if self._forced.is_set():
            await self._kill_everything()
            # Even a forced stop owes the server what is already known: a short flush.
            with trio.move_on_after(FORCED_FLUSH, shield=True):
                await self.outbox.wait_empty()
        if len(self.outbox):
            log.error(
                "%d message(s) could not be delivered before exit: %s",
                len(self.outbox),
                ", ".join(f"{type(m).__name__}({m.task_id})" for m in self.outbox.pending),
            )
        with trio.move_on_after(CLOSE_WAIT, shield=True):
            await self.connection.close()
        # The last values and spans, after the tasks have ended; bounded and shielded.
        await flush([self.metrics.provider, *filter(None, [self.tracer_provider])])
        log.info("worker stopped")

    async def _kill_everything(self) -> None:
        with trio.move_on_after(FORCED_WAIT, shield=True):
            await self.backend.kill_all()
            self.supervisor.force_stop()
            await self.supervisor.wait_idle()


def _secrets(config: WorkerConfig) -> list[str]:
    """Values no span may show: the API key and the configured task environment,
    inherited values included."""
    environment = getattr(config.backend, "environment", ())
    values = list(resolve_environment(environment, os.environ).values())
    return [config.api_key, *values] if config.api_key else values


class SignalAction(enum.Enum):
    STOP = "stop"
    FORCE = "force"
    DRAIN = "drain"
    IGNORE = "ignore"


HANDLED_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP)


def signal_action(signum: int, *, stopping: bool) -> SignalAction:
    """What a signal does, as operators expect: SIGINT/SIGTERM stop (a second one
    forces), SIGQUIT drains, SIGHUP (a closed terminal) is ignored."""
    match signum:
        case signal.SIGHUP:
            return SignalAction.IGNORE
        case signal.SIGQUIT:
            return SignalAction.DRAIN
    return SignalAction.FORCE if stopping else SignalAction.STOP


def again_hint(signum: int) -> str:
    """How to force the stop: a terminal's user presses Ctrl-C; systemd, Kubernetes or
    ``kill`` send a signal, and there is no Ctrl-C to press."""
    if signum == signal.SIGINT:
        return "press Ctrl-C again"
    return f"send {signal.Signals(signum).name} again"


@contextlib.contextmanager
def _signal_receiver(enabled: bool) -> Iterator[AsyncIterator[int] | None]:
    if not enabled:
        yield None
        return
    with trio.open_signal_receiver(*HANDLED_SIGNALS) as signals:
        yield signals


def startup_failed(exc: StartupError) -> int:
    """Say why the worker cannot start, in the command line's one error format."""
    print(f"ozw: error: {exc}", file=sys.stderr)
    return EXIT_STARTUP


async def serve(config: WorkerConfig, backend: Backend) -> int:
    """Run a worker with signal handling; the CLI's entry into Trio."""
    try:
        otel = read_plan(os.environ)
    except OtelSettingError as exc:
        return startup_failed(StartupError(str(exc)))
    try:
        async with backend:
            worker = Worker(config, backend, otel=otel)
            code = await worker.run()
    except StartupError as exc:
        return startup_failed(exc)
    if worker.failure is not None:
        print(f"ozw: error: {worker.failure}", file=sys.stderr)
    return code


def run(config: WorkerConfig) -> int:
    """Run the worker for ``config`` until it is stopped; returns the exit code."""
    from ozw.backends import create_backend

    try:
        backend = create_backend(config)
    except BackendUnavailable as exc:
        return startup_failed(exc)
    return trio.run(serve, config, backend)
