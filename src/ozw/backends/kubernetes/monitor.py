"""Following one task Job to its end (docs/protocol.md, "kubernetes").

Three watchers race inside one task group and the first verdict wins: a watch on
the Job (by name), a watch on its pods (by execution-hash label), and a safety
poll every 30 s (a watch can miss what a poll cannot, and an unschedulable pod's
timeout passes without any event). Meanwhile the task container's log is followed
and relayed into the task log line by line; a stream that breaks or ends while the
container still runs (an API server or kubelet restart) is followed again from just
before its last line, so no line is lost (the last second's may repeat). On
failure, the logs of the pod's other containers (up to 1 MiB each) go to the worker
log.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any, Final

import anyio
import httpx2 as httpx
from lightkube import ApiError

from ozw.backends.kubernetes.client import API_PROBLEMS, KubeApi, problem_text
from ozw.backends.kubernetes.manifests import TASK_CONTAINER
from ozw.backends.kubernetes.names import execution_selector
from ozw.backends.kubernetes.rules import (
    classify_job_failure,
    classify_pod,
    container_ended,
    container_started,
    deadline_failure,
    job_complete,
    job_failed,
    needs_events,
    unschedulable_since,
)
from ozw.tasks.failures import FailureReason, TaskFailure
from ozw.telemetry.logs import TaskLog

logger = logging.getLogger(__name__)

SAFETY_POLL: Final = 30.0
LOG_DRAIN: Final = 5.0
"""How long a finished task's log follower may take to relay its last lines."""
MAX_LOG_BYTES: Final = 1 << 20
FOLLOW_AGAIN_FIRST: Final = 0.5
FOLLOW_AGAIN_MAX: Final = 15.0
"""Backoff between attempts to follow a broken log stream again."""
FOLLOW_SETTLE: Final = 5.0
"""How long a log stream that ended waits for its container's status to say it has
ended before the stream is followed again (kubelets report a status every few seconds)."""

Json = dict[str, Any]
Verdict = TaskFailure | None
"""None: the Job completed."""


class JobMonitor:
    """Watches one Job and its pods until it completes or fails."""

    def __init__(
        self,
        api: KubeApi,
        job_name: str,
        execution_id: str,
        log: TaskLog,
        *,
        unschedulable_timeout: float,
        logs_since: float | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.api = api
        self.job_name = job_name
        self.selector = execution_selector(execution_id)
        self.log = log
        self.unschedulable_timeout = unschedulable_timeout
        self.logs_since = logs_since
        """For a reattached task, the ``time.time()`` of this worker's start: earlier lines
        were relayed (or lost) by the run before the restart."""
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.poll_interval = SAFETY_POLL
        self.followed: dict[str, anyio.Event] = {}
        """Pods whose task container log is being followed → set when the stream ended."""
        self.rechecks: set[str] = set()
        """Unschedulable pods with a re-check due when their timeout ends."""
        self.verdict: Verdict = None
        self._decided = anyio.Event()

    def _decide(self, verdict: Verdict) -> None:
        if not self._decided.is_set():
            self.verdict = verdict
            self._decided.set()

    async def run(self) -> None:
        """Return once the Job completed; raise its TaskFailure when it failed."""
        async with anyio.create_task_group() as group:
            self._group = group
            group.start_soon(self._watch_job)
            group.start_soon(self._watch_pods)
            group.start_soon(self._poll)
            await self._decided.wait()
            # Let the log follower relay the last lines before we report.
            with anyio.move_on_after(LOG_DRAIN):
                for ended in list(self.followed.values()):
                    await ended.wait()
            group.cancel_scope.cancel()
        if self.verdict is not None:
            raise self.verdict

    # -- the three watchers --

    async def _watch_job(self) -> None:
        async with aclosing(self.api.watch("Job", name=self.job_name)) as events:
            async for event, job in events:
                if event == "DELETED":
                    self._decide(
                        TaskFailure(FailureReason.JOB_WATCH, f"Job {self.job_name} was deleted")
                    )
                else:
                    await self._job_state(job)

    async def _watch_pods(self) -> None:
        async with aclosing(self.api.watch("Pod", labels=self.selector)) as events:
            async for event, pod in events:
                if event != "DELETED":
                    await self._pod_state(pod)

    async def _poll(self) -> None:
        while True:
            await anyio.sleep(self.poll_interval)
            try:
                job = await self.api.get_job(self.job_name)
                if job is None:
                    self._decide(
                        TaskFailure(FailureReason.JOB_WATCH, f"Job {self.job_name} is gone")
                    )
                    return
                await self._job_state(job)
                for pod in await self.api.list_pods(self.selector):
                    await self._pod_state(pod)
            except API_PROBLEMS as exc:
                # The watches carry on; only a lasting outage matters, and it shows there.
                self.log.warning(
                    "safety poll of Job %s failed: %s", self.job_name, problem_text(exc)
                )

    # -- judging states --

    async def _job_state(self, job: Json) -> None:
        if job_complete(job):
            # The pod watch may lag the Job's: follow a log not followed yet, so that
            # its lines are relayed (within LOG_DRAIN) before the task is reported.
            try:
                for pod in await self.api.list_pods(self.selector):
                    self._follow_if_started(pod)
            except API_PROBLEMS as exc:
                self.log.warning("listing the pods of Job %s: %s", self.job_name, problem_text(exc))
            self._decide(None)
        elif job_failed(job):
            failure = None
            try:
                for pod in await self.api.list_pods(self.selector):
                    failure = failure or await self._pod_failure(pod, job)
            except API_PROBLEMS as exc:
                self.log.warning(
                    "listing the pods of failed Job %s: %s", self.job_name, problem_text(exc)
                )
            self._decide(failure or classify_job_failure(job))

    def _follow_if_started(self, pod: Json) -> None:
        """Follow the task container's log once it has started (once per pod)."""
        name = pod.get("metadata", {}).get("name", "")
        if name and name not in self.followed and container_started(pod, TASK_CONTAINER):
            self.followed[name] = anyio.Event()
            self._group.start_soon(self._follow, name)

    async def _pod_state(self, pod: Json) -> None:
        name = pod.get("metadata", {}).get("name", "")
        self._follow_if_started(pod)
        failure = await self._pod_failure(pod)
        if failure is not None:
            await self._dump_logs(pod)
            self._decide(failure)
            return
        since = unschedulable_since(pod)
        if since is not None and self.unschedulable_timeout > 0 and name not in self.rechecks:
            # No event marks the timeout's end: look again exactly then.
            self.rechecks.add(name)
            due = since + dt.timedelta(seconds=self.unschedulable_timeout) - self.clock()
            self._group.start_soon(self._recheck, max(0.0, due.total_seconds()))

    async def _recheck(self, delay: float) -> None:
        await anyio.sleep(delay)
        try:
            for pod in await self.api.list_pods(self.selector):
                await self._pod_state(pod)
        except API_PROBLEMS as exc:
            self.log.warning("re-reading the pods of Job %s: %s", self.job_name, problem_text(exc))

    async def _pod_failure(self, pod: Json, job: Json | None = None) -> TaskFailure | None:
        events: list[Json] = []
        if needs_events(pod):
            uid = pod.get("metadata", {}).get("uid", "")
            try:
                events = await self.api.list_events(uid)
            except API_PROBLEMS as exc:
                self.log.warning("listing events of pod %s: %s", uid, problem_text(exc))
        failure = classify_pod(pod, events, self.clock(), self.unschedulable_timeout)
        if failure is not None and pod.get("metadata", {}).get("deletionTimestamp"):
            # A pod being deleted may have been stopped by the Job controller: ask why.
            if job is None:
                try:
                    job = await self.api.get_job(self.job_name)
                except API_PROBLEMS as exc:
                    self.log.warning("reading Job %s: %s", self.job_name, problem_text(exc))
            failure = deadline_failure(pod, job) or failure
        return failure

    # -- logs --

    async def _follow(self, pod: str) -> None:
        since = None
        if self.logs_since is not None:
            since = max(1, math.ceil(time.time() - self.logs_since))
        last_line: float | None = None
        delay = FOLLOW_AGAIN_FIRST
        while True:
            try:
                stream = self.api.follow_log(pod, TASK_CONTAINER, since=since)
                async with aclosing(stream) as lines:
                    async for line in lines:
                        last_line = time.time()
                        delay = FOLLOW_AGAIN_FIRST
                        self.log.output("agent", line)
            except (ApiError, httpx.HTTPError) as exc:
                if isinstance(exc, ApiError) and exc.status.code == 404:
                    break  # the pod is gone: nothing more to follow
                # Broken off: whatever came after is read again, even if it has ended.
                self.log.debug("log stream of pod %s: %s", pod, problem_text(exc))
                await anyio.sleep(delay)
                delay = min(delay * 2, FOLLOW_AGAIN_MAX)
            else:
                if await self._container_settles_ended(pod):
                    break
                self.log.debug("log stream of pod %s ended while its container runs", pod)
            if last_line is not None:
                # From just before the last line relayed: none is lost, the last
                # second's may come again.
                since = max(1, math.ceil(time.time() - last_line))
        self.followed[pod].set()

    async def _container_settles_ended(self, pod: str) -> bool:
        """After a log stream ended: whether the task container has ended (or its pod is
        gone). The pod's status may lag its log by seconds, so it is read a few times
        before the stream is taken for broken."""
        checks = math.ceil(FOLLOW_SETTLE / FOLLOW_AGAIN_FIRST)
        for check in range(checks):
            if check:
                await anyio.sleep(FOLLOW_AGAIN_FIRST)
            try:
                pods = await self.api.list_pods(self.selector)
            except API_PROBLEMS:
                continue
            found = [p for p in pods if p.get("metadata", {}).get("name") == pod]
            if not found or container_ended(found[0], TASK_CONTAINER):
                return True
        return False

    async def _dump_logs(self, pod: Json) -> None:
        name = pod.get("metadata", {}).get("name", "")
        spec = pod.get("spec", {})
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            cname = container.get("name", "")
            if cname == TASK_CONTAINER and name in self.followed:
                continue  # already relayed line by line
            try:
                text = await self.api.read_log(name, cname, MAX_LOG_BYTES)
            except API_PROBLEMS:
                continue  # a container that never started has no log
            if text.strip():
                self.log.info("pod %s container %s output:\n%s", name, cname, text.rstrip())
