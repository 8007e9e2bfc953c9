"""One task as one Job: :class:`KubernetesTaskRun` (docs/protocol.md).

::

    setup     check the sidecars, build the Job and its Secret (no I/O)
    execute   create the Secret, then the Job, then make the Job the Secret's owner;
              follow the Job (:class:`~ozw.backends.kubernetes.monitor.JobMonitor`)
    teardown  completed: delete the Job (foreground: pods and Secret go first);
              failed: keep the Job for its TTL (marked reported), delete the Secret

Cancellation (the server's, or ``task_timeout``) deletes the Job, foreground and
bounded, so a cancelled task stops using the cluster; the worker's own graceful
shutdown leaves it running for the next start to adopt (``reattach``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import anyio

from ozw.backends.base import ExecuteResult, TaskRun
from ozw.backends.execution import (
    cleanup_bound,
    configured_environment,
    layered_environment,
    require_valid_environment,
)
from ozw.backends.kubernetes.client import API_PROBLEMS, problem_text
from ozw.backends.kubernetes.manifests import (
    TaskJobSpec,
    effective_sidecars,
    secret_owner_patch,
    sidecar_problem,
    task_job,
    task_secret,
)
from ozw.backends.kubernetes.monitor import JobMonitor
from ozw.backends.kubernetes.names import ANNOTATION_REPORTED, execution_id_of, job_name
from ozw.backends.kubernetes.rules import job_finished, pod_ended
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog

if TYPE_CHECKING:
    from ozw.backends.kubernetes.backend import KubernetesBackend

DELETE_WAIT: Final = 60.0
"""How long a cancelled task waits for its Job to be gone after a foreground delete."""


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
        super().__init__(params, log)
        self.backend = backend
        self.config = backend.config
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
            if self.created and not pod_ended(failure) and not await self._finished():
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
        except API_PROBLEMS as exc:
            raise TaskFailure(
                FailureReason.JOB_CREATE, f"could not create the task's Secret: {problem_text(exc)}"
            ) from None
        try:
            created = await api.create(self.job)
        except API_PROBLEMS as exc:
            await self._delete_secret()
            raise TaskFailure(
                FailureReason.JOB_CREATE,
                f"could not create Kubernetes Job {self.name}: {problem_text(exc)}",
            ) from None
        self.created = True
        self.backend.jobs.add(self.name)
        self.log.info("Job %s created in namespace %s", self.name, self.config.namespace)
        try:
            await api.own_secret(
                self.name, secret_owner_patch(self.name, created["metadata"]["uid"])
            )
        except API_PROBLEMS as exc:
            # Not fatal: teardown deletes the Secret itself.
            self.log.warning(
                "could not make Job %s own its Secret: %s", self.name, problem_text(exc)
            )

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
        except API_PROBLEMS as exc:
            self.log.warning("could not read Job %s: %s", self.name, problem_text(exc))
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
            except API_PROBLEMS as exc:
                self.log.warning("could not delete Job %s: %s", self.name, problem_text(exc))
        if scope.cancelled_caught:
            self.log.warning("Job %s still exists %gs after its deletion", self.name, DELETE_WAIT)

    async def _delete_secret(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.backend.api().delete_secret(self.name)
            except API_PROBLEMS as exc:
                self.log.warning("could not delete Secret %s: %s", self.name, problem_text(exc))

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
        except API_PROBLEMS as exc:
            self.log.warning("could not mark Job %s reported: %s", self.name, problem_text(exc))
        self.log.info("Job %s kept (%s)", self.name, why)
