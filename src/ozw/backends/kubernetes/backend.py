"""The Kubernetes backend proper: each task a Job (docs/protocol.md), beyond the Go worker's.

One task::

    setup     check the sidecars, build the Job and its Secret (no I/O)
    execute   create the Secret, then the Job, then make the Job the Secret's owner;
              follow the Job (:class:`~ozw.backends.kubernetes.monitor.JobMonitor`)
    teardown  completed: delete the Job (foreground: pods and Secret go first);
              failed: keep the Job for its TTL (marked reported), delete the Secret

Cancellation (the server's, or ``task_timeout``) deletes the Job, foreground and
bounded, so a cancelled task stops using the cluster. The worker's own shutdown is
different: with ``reattach`` on (the default) Jobs are left running and nothing is
reported; the next start finds them by label and adopts them (:meth:`recover`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import anyio

from ozw.backends.base import Backend, ExecuteResult, TaskRun
from ozw.backends.execution import (
    cleanup_bound,
    configured_environment,
    layered_environment,
    require_valid_environment,
)
from ozw.backends.kubernetes.classify import job_finished
from ozw.backends.kubernetes.client import (
    API_PROBLEMS,
    KubeApi,
    KubeConfigError,
    load_kubeconfig,
    problem_text,
)
from ozw.backends.kubernetes.manifests import (
    TaskJobSpec,
    effective_sidecars,
    secret_owner_patch,
    sidecar_problem,
    task_job,
    task_secret,
)
from ozw.backends.kubernetes.monitor import JobMonitor
from ozw.backends.kubernetes.names import (
    ANNOTATION_EXECUTION_ID,
    ANNOTATION_REPORTED,
    ANNOTATION_TASK_ID,
    execution_id_of,
    job_name,
    label_hash,
    worker_selector,
)
from ozw.backends.kubernetes.preflight import access_problems, run_preflight
from ozw.config import KubernetesConfig
from ozw.tasks.failures import BackendUnavailable, FailureReason, TaskFailure
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog

logger = logging.getLogger(__name__)

DELETE_WAIT: Final = 60.0
"""How long a cancelled task waits for its Job to be gone after a foreground delete."""
POD_ENDED: Final = frozenset(
    {
        FailureReason.CONTAINER_EXIT,
        FailureReason.CONTAINER_OOM,
        FailureReason.EVICTED,
        FailureReason.JOB_FAILED,
        FailureReason.ACTIVE_DEADLINE,
    }
)
"""Failures that mean the pod has ended (the Job fails with it)."""
ApiProblem = API_PROBLEMS
_problem = problem_text


class KubernetesBackend(Backend):
    """Runs every task as a Job in one namespace (see the module docstring)."""

    name: ClassVar[str] = "kubernetes"

    def __init__(
        self,
        config: KubernetesConfig,
        *,
        worker_id: str,
        cleanup: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(environ=environ)
        self.config = config
        self.worker_id = worker_id
        self.cleanup = cleanup
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
        except ApiProblem as exc:
            raise BackendUnavailable(
                f"kubernetes backend: cannot reach the API server at {api.server}: {_problem(exc)}"
            ) from None
        try:
            missing = await access_problems(api)
        except ApiProblem as exc:
            raise BackendUnavailable(
                f"kubernetes backend: access review failed: {_problem(exc)}"
            ) from None
        if missing:
            raise BackendUnavailable(
                f"kubernetes backend: missing permissions in namespace {namespace}: "
                + ", ".join(missing)
            )
        try:
            await api.create(self._sample_job(), dry_run=True)
        except ApiProblem as exc:
            raise BackendUnavailable(
                f"kubernetes backend: a dry-run task Job was refused in namespace {namespace}: "
                f"{_problem(exc)}"
            ) from None
        return (
            f"Kubernetes {version} at {api.server}, namespace {namespace}: "
            "permissions ok, dry-run Job accepted"
        )

    def _sample_job(self) -> dict[str, Any]:
        """A representative task Job: the template, a sidecar, setup, the real shapes."""
        from ozw.tasks.params import Sidecar

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
        except ApiProblem as exc:
            logger.warning("could not list the Jobs of an earlier run: %s", _problem(exc))
            return
        for job in jobs:
            meta = job.get("metadata", {})
            annotations = meta.get("annotations") or {}
            task_id = annotations.get(ANNOTATION_TASK_ID)
            if task_id is None or meta.get("deletionTimestamp"):
                continue  # not a task Job (the preflight's), or going away
            if annotations.get(ANNOTATION_REPORTED) == "true":
                continue
            self._adopted[task_id] = job
        if self._adopted:
            logger.info(
                "found %d Job(s) of an earlier run to reattach: %s",
                len(self._adopted),
                ", ".join(j["metadata"]["name"] for j in self._adopted.values()),
            )

    def reattached(self) -> list[TaskParams]:
        """The tasks of the Jobs found at start-up, for the supervisor to adopt."""
        found = []
        for task_id, job in self._adopted.items():
            annotations = job["metadata"].get("annotations") or {}
            containers = job["spec"]["template"]["spec"].get("containers", [])
            image = next((c.get("image", "") for c in containers if c["name"] == "task"), "")
            found.append(
                TaskParams(
                    task_id=task_id,
                    run_id=task_id,
                    execution_id=annotations.get(ANNOTATION_EXECUTION_ID),
                    env={},
                    image=image,
                    sidecars=(),
                    base_args=(),
                    harness=None,
                    environment_id=None,
                    server_root_url=None,
                    task={},
                )
            )
        return found

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
                except ApiProblem as exc:
                    logger.warning("could not delete Job %s: %s", name, _problem(exc))

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()


class KubernetesTaskRun(TaskRun):
    """One task as one Job (or, adopted, the Job an earlier run of this worker made)."""

    def __init__(
        self,
        backend: KubernetesBackend,
        params: TaskParams,
        log: TaskLog,
        *,
        adopted: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.config = backend.config
        self.params = params
        self.log = log
        self.adopted = adopted
        self.execution_id = execution_id_of(params.task_id, params.execution_id)
        self.name = (
            adopted["metadata"]["name"] if adopted else job_name(params.run_id, self.execution_id)
        )
        self.job: dict[str, Any] | None = None
        self.secret: dict[str, Any] | None = None
        self.created = adopted is not None
        self.completed = False
        self.deleted = False

    async def setup(self) -> None:
        """Check the sidecars and build the Job and Secret (nothing is created yet)."""
        if self.adopted is not None:
            return
        params, config = self.params, self.config
        sidecars = effective_sidecars(params.sidecars, params.harness, config)
        if (problem := sidecar_problem(sidecars, config.use_image_volumes)) is not None:
            raise TaskFailure(FailureReason.SIDECAR_PREP, problem)
        env = layered_environment(
            task=params.env,
            configured=configured_environment(config.environment, self.backend.environ),
        )
        # The forced OZ_* variables are the manifest's; a name no container can take
        # fails here, naming it, rather than as a pod that never starts.
        require_valid_environment(env, FailureReason.JOB_CREATE, "the task's Job")
        spec = TaskJobSpec(
            worker_id=self.backend.worker_id,
            task_id=params.task_id,
            execution_id=self.execution_id,
            name=self.name,
            image=params.image,
            base_args=params.base_args,
            env=env,
            sidecars=sidecars,
            instance_shape=params.instance_shape,
            cleanup=self.backend.cleanup,
        )
        self.job = task_job(spec, config)
        self.secret = task_secret(spec, config)

    async def execute(self) -> ExecuteResult:
        try:
            if self.adopted is None:
                await self._create()
            else:
                self.log.info("reattached to Job %s", self.name)
            await self._monitor()
        except TaskFailure as failure:
            # A failed pod's Job is kept for its TTL, for post-mortems; a Job whose pod
            # can never start (image, scheduling, mounts) would only hold the cluster.
            ended = failure.exit_code is not None or failure.reason in POD_ENDED
            if self.created and not ended and not await self._finished():
                await self._delete_job()
            raise
        except BaseException:
            # Cancelled (by the server or task_timeout): the Job must stop too, unless
            # the worker is shutting down and the next start reattaches.
            if not self.backend.detaching and self.created:
                await self._delete_job()
            raise
        self.completed = True
        return ExecuteResult.COMPLETED

    async def _create(self) -> None:
        assert self.job is not None, "setup() first"
        assert self.secret is not None, "setup() first"
        api = self.backend.api()
        try:
            await api.create(self.secret)
        except ApiProblem as exc:
            raise TaskFailure(
                FailureReason.JOB_CREATE, f"could not create the task's Secret: {_problem(exc)}"
            ) from None
        try:
            created = await api.create(self.job)
        except ApiProblem as exc:
            await self._delete_secret()
            raise TaskFailure(
                FailureReason.JOB_CREATE,
                f"could not create Kubernetes Job {self.name}: {_problem(exc)}",
            ) from None
        self.created = True
        self.backend.jobs.add(self.name)
        self.log.info("Job %s created in namespace %s", self.name, self.config.namespace)
        try:
            await api.own_secret(
                self.name, secret_owner_patch(self.name, created["metadata"]["uid"])
            )
        except ApiProblem as exc:
            # Not fatal: teardown deletes the Secret itself.
            self.log.warning("could not make Job %s own its Secret: %s", self.name, _problem(exc))

    async def _monitor(self) -> None:
        monitor = JobMonitor(
            self.backend.api(),
            self.name,
            self.execution_id,
            self.log,
            unschedulable_timeout=self.config.unschedulable_timeout,
            logs_since=None if self.adopted is None else self.backend.started,
        )
        self.monitor = monitor
        await monitor.run()

    async def _finished(self) -> bool:
        try:
            job = await self.backend.api().get_job(self.name)
        except ApiProblem as exc:
            self.log.warning("could not read Job %s: %s", self.name, _problem(exc))
            return False
        return job is None or job_finished(job)

    async def _delete_job(self) -> None:
        """Delete the Job (foreground) and wait, bounded, until it is gone; shielded."""
        api = self.backend.api()
        with cleanup_bound(DELETE_WAIT) as scope:
            try:
                await api.delete_job(self.name)
                self.log.info("deleting Job %s", self.name)
                await api.wait_job_gone(self.name)
                self.deleted = True
                self.backend.jobs.discard(self.name)
                self.log.info("Job %s deleted", self.name)
            except ApiProblem as exc:
                self.log.warning("could not delete Job %s: %s", self.name, _problem(exc))
        if scope.cancelled_caught:
            self.log.warning("Job %s still exists %gs after its deletion", self.name, DELETE_WAIT)

    async def _delete_secret(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.backend.api().delete_secret(self.name)
            except ApiProblem as exc:
                self.log.warning("could not delete Secret %s: %s", self.name, _problem(exc))

    async def teardown(self) -> None:
        """Completed: delete the Job. Failed: keep it for its TTL, marked reported."""
        backend = self.backend
        if not self.created or self.deleted or backend.detaching:
            return
        backend.jobs.discard(self.name)
        # The Secret holds the task's values and is needed no more, whatever happened.
        await self._delete_secret()
        if self.completed and backend.cleanup:
            await self._delete_job()
            if not self.deleted:
                raise RuntimeError(f"could not delete Job {self.name}")
            return
        why = "failed" if not self.completed else "finished (cleanup is off)"
        try:
            await backend.api().annotate_job(self.name, {ANNOTATION_REPORTED: "true"})
        except ApiProblem as exc:
            self.log.warning("could not mark Job %s reported: %s", self.name, _problem(exc))
        self.log.info("Job %s kept (%s)", self.name, why)


__all__ = ["KubernetesBackend", "KubernetesTaskRun", "label_hash"]
