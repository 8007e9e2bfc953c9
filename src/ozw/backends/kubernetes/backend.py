"""The Kubernetes backend: :class:`KubernetesBackend`, each task a Job (docs/protocol.md).

The backend checks the cluster at start-up, finds the Jobs an earlier run of this
worker left (reattach) and opens one :class:`~ozw.backends.kubernetes.task.KubernetesTaskRun`
per task. The worker's own shutdown leaves Jobs running when ``reattach`` is on (the
default): nothing is reported, and the next start adopts them (:meth:`recover`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Unpack

import anyio

from ozw.backends.base import Backend, TaskRun, WorkerSettings
from ozw.backends.kubernetes.client import (
    API_PROBLEMS,
    KubeApi,
    KubeConfigError,
    load_kubeconfig,
    problem_text,
)
from ozw.backends.kubernetes.manifests import TaskJobSpec, task_job
from ozw.backends.kubernetes.names import execution_id_of, job_name, worker_selector
from ozw.backends.kubernetes.preflight import access_problems, run_preflight
from ozw.backends.kubernetes.rules import adoptable_task, adopted_params
from ozw.backends.kubernetes.task import DELETE_WAIT, KubernetesTaskRun
from ozw.config import KubernetesConfig
from ozw.tasks.failures import BackendUnavailable
from ozw.tasks.params import Sidecar, TaskParams
from ozw.telemetry.logs import TaskLog

logger = logging.getLogger(__name__)


class KubernetesBackend(Backend):
    """Runs every task as a Job in one namespace (see the module docstring)."""

    name: ClassVar[str] = "kubernetes"

    def __init__(self, config: KubernetesConfig, **settings: Unpack[WorkerSettings]) -> None:
        super().__init__(**settings)
        self.config = config
        self.reattaches = config.reattach
        self.teardown_timeout = config.call_timeout * 3 + DELETE_WAIT
        self._api: KubeApi | None = None
        self.detaching = False
        """Set when the worker stops gracefully: running Jobs are left for the next start."""
        self._adopted: dict[str, dict[str, Any]] = {}
        """Jobs found at start-up, by task id, until their task run is opened."""
        self.jobs: set[str] = set()
        """Jobs of this process's running tasks."""
        self.started = time.time()
        """A reattached task's log is relayed from here on (wall clock, as the API's)."""

    # -- connection --

    def api(self) -> KubeApi:
        """The API client, built on first use (BackendUnavailable when there is no config)."""
        if self._api is None:
            try:
                single, _ = load_kubeconfig(
                    self.config.kubeconfig, self.config.context, self.environ
                )
            except KubeConfigError as exc:
                raise BackendUnavailable(f"kubernetes backend: {exc}") from None
            self._api = KubeApi(
                single,
                self.config.namespace,
                call_timeout=self.config.call_timeout,
                environ=self.environ,
            )
        return self._api

    # -- start-up --

    async def check(self) -> str:
        """API server version, every permission the backend needs, a dry-run Job."""
        api = self.api()
        namespace = self.config.namespace
        try:
            version = await api.version()
        except API_PROBLEMS as exc:
            raise BackendUnavailable(
                f"kubernetes backend: cannot reach the API server at {api.server}: "
                + problem_text(exc)
            ) from None
        try:
            missing = await access_problems(api)
        except API_PROBLEMS as exc:
            raise BackendUnavailable(
                f"kubernetes backend: access review failed: {problem_text(exc)}"
            ) from None
        if missing:
            raise BackendUnavailable(
                f"kubernetes backend: missing permissions in namespace {namespace}: "
                + ", ".join(missing)
            )
        try:
            await api.create(self._sample_job(), dry_run=True)
        except API_PROBLEMS as exc:
            raise BackendUnavailable(
                f"kubernetes backend: a dry-run task Job was refused in namespace {namespace}: "
                f"{problem_text(exc)}"
            ) from None
        return (
            f"Kubernetes {version} at {api.server}, namespace {namespace}: "
            "permissions ok, dry-run Job accepted"
        )

    def _sample_job(self) -> dict[str, Any]:
        """A representative task Job: the template, a sidecar, setup, the real shapes."""
        spec = TaskJobSpec(
            worker_id=self.worker_id,
            task_id="ozw-check",
            execution_id="ozw-check",
            name=job_name("ozw-check", "check"),
            image=self.config.default_image or "ubuntu:22.04",
            base_args=("agent", "run"),
            env={"TASK_ID": "ozw-check"},
            sidecars=(Sidecar(self.config.sidecar_image or self.config.preflight_image, "/agent"),),
            cleanup=self.cleanup,
        )
        return task_job(spec, self.config)

    async def recover(self) -> None:
        """Run the preflight Job, then find this worker's Jobs left by an earlier run."""
        if self.config.preflight:
            await run_preflight(self.api(), self.worker_id, self.config)
        if self.reattaches:
            await self._find_jobs()

    async def _find_jobs(self) -> None:
        try:
            jobs = await self.api().list_jobs(worker_selector(self.worker_id))
        except API_PROBLEMS as exc:
            logger.warning("could not list the Jobs of an earlier run: %s", problem_text(exc))
            return
        for job in jobs:
            if (task_id := adoptable_task(job)) is not None:
                self._adopted[task_id] = job
        if self._adopted:
            logger.info(
                "found %d Job(s) of an earlier run to reattach: %s",
                len(self._adopted),
                ", ".join(j["metadata"]["name"] for j in self._adopted.values()),
            )

    def reattached(self) -> list[TaskParams]:
        """The tasks of the Jobs found at start-up, for the supervisor to adopt."""
        return [adopted_params(task_id, job) for task_id, job in self._adopted.items()]

    # -- tasks --

    def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
        adopted = self._adopted.pop(params.task_id, None)
        return KubernetesTaskRun(self, params, log, adopted=adopted)

    def detach(self) -> None:
        self.detaching = True

    async def cancel(self, params: TaskParams) -> None:
        """A cancellation of a task no longer running here: delete its Job if it exists."""
        name = job_name(params.run_id, execution_id_of(params.task_id, params.execution_id))
        with anyio.move_on_after(self.config.call_timeout, shield=True):
            await self.api().delete_job(name)

    async def kill_all(self) -> None:
        """Second Ctrl-C: Jobs live outside this process; with reattach off, delete them."""
        if self.reattaches:
            return
        with anyio.move_on_after(self.config.call_timeout, shield=True):
            for name in sorted(self.jobs):
                try:
                    await self.api().delete_job(name)
                except API_PROBLEMS as exc:
                    logger.warning("could not delete Job %s: %s", name, problem_text(exc))

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
