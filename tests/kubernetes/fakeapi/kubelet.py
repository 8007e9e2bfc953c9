"""The fake cluster's Job controller and kubelet: scripted Job and Pod progressions.

A created Job gets one pod (named ``<job>-<5 chars>``, labelled like the real Job
controller does, owned by the Job). What the pod then does is decided by the image
of its main container, like a kubelet running images with known behaviour:

=====================  =========================================================
``fake/exit-N``         runs, then exits N: pod Failed, Job Failed
``fake/oom``            OOM-killed (137)
``fake/pull-error``     waits in ``ErrImagePull`` for ever
``fake/bad-image``      waits in ``InvalidImageName``
``fake/unschedulable``  ``PodScheduled=False/Unschedulable`` for ever
``fake/mount-fail``     Pending with a ``FailedMount`` event
``fake/evicted``        evicted while running
``fake/hold``           runs until ``POST /_fake/release/<ns>/<job>?exit=N``;
                        ``POST /_fake/say/<ns>/<job>?line=TEXT`` logs a line meanwhile
anything else           runs, writes its log lines, exits 0: Job Complete
=====================  =========================================================

An init container whose image is ``fake/exit-N`` fails the pod the same way. The
kubelet resolves ``secretKeyRef`` variables from Secrets (a missing one is
``CreateContainerConfigError``, as on a real node), and the main container logs
``fake agent: TASK_ID=<value>`` and its arguments, so tests can see the wiring.
(Admission, RBAC and the controllers proper are the real control plane's:
tests/kubernetes/real/.)
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
import threading
import time
from typing import Any

from tests.kubernetes.fakeapi.store import ApiError, Obj, Store, now

_EXIT_RE = re.compile(r"fake/exit-(\d+)")


def _behaviour(image: str) -> str:
    repository = image.split("@")[0].rsplit(":", 1)[0] if "/" in image else image.split(":")[0]
    return repository


class Cluster:
    """The controller loop state: logs, held pods, settings."""

    def __init__(self, store: Store, *, step: float = 0.05) -> None:
        self.store = store
        self.step = step
        self.logs: dict[tuple[str, str, str], list[str]] = {}
        self.log_times: dict[tuple[str, str, str], list[float]] = {}
        """When each line was written (for ``sinceSeconds``)."""
        self.released: dict[tuple[str, str], int] = {}
        self.mains: dict[tuple[str, str], tuple[str, str, str]] = {}
        """(namespace, Job) → the log key of its pod's main container, once it runs."""
        self.lock = threading.Condition()

    # --- events and logs ---------------------------------------------------------

    def event(self, obj: Obj, kind: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        self.store.create(
            "events",
            meta["namespace"],
            {
                "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}"},
                "involvedObject": {
                    "apiVersion": obj["apiVersion"],
                    "kind": obj["kind"],
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                },
                "type": kind,
                "reason": reason,
                "message": message,
                "firstTimestamp": now(),
                "lastTimestamp": now(),
                "count": 1,
                "source": {"component": "fake-kubelet"},
            },
        )

    def open_log(self, namespace: str, pod: str, container: str) -> None:
        """A container's (empty) log, readable from now on."""
        with self.lock:
            self.logs.setdefault((namespace, pod, container), [])
            self.log_times.setdefault((namespace, pod, container), [])

    def log(self, namespace: str, pod: str, container: str, line: str) -> None:
        with self.lock:
            self.logs.setdefault((namespace, pod, container), []).append(line)
            self.log_times.setdefault((namespace, pod, container), []).append(time.time())
            self.lock.notify_all()

    def say(self, namespace: str, job: str, line: str) -> None:
        """A line in the log of the Job's running main container."""
        with self.lock:
            key = self.mains.get((namespace, job))
        if key is None:
            raise ApiError(404, "NotFound", f"no running container of Job {job}")
        self.log(*key, line)

    def release(self, namespace: str, job: str, exit_code: int) -> None:
        with self.lock:
            self.released[(namespace, job)] = exit_code
            self.lock.notify_all()

    # --- the Job controller ------------------------------------------------------

    def job_created(self, job: Obj) -> None:
        threading.Thread(target=self._run_job, args=(job,), daemon=True).start()

    def _pod_for(self, job: Obj) -> Obj:
        meta = job["metadata"]
        template = job["spec"]["template"]
        controller = {
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "controller-uid": meta["uid"],
        }
        labels = {
            **(template.get("metadata", {}).get("labels") or {}),
            **controller,
            "batch.kubernetes.io/job-name": meta["name"],
            "job-name": meta["name"],
        }
        return {
            "metadata": {
                "name": f"{meta['name']}-{secrets.token_hex(3)[:5]}",
                "labels": labels,
                "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": "fake-node"},
            "status": {"phase": "Pending", "conditions": []},
        }

    def _run_job(self, job: Obj) -> None:
        # The Job or its pod deleted meanwhile (ApiError): a real controller moves on.
        with contextlib.suppress(ApiError):
            self._progress(job)

    def _progress(self, job: Obj) -> None:
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        time.sleep(self.step)
        pod = self._pod_for(job)
        with self.store.lock:  # re-entrant: no pod for a Job that is being deleted
            current = self.store.get("jobs", namespace, name)
            if current["metadata"].get("deletionTimestamp"):
                return
            pod = self.store.create("pods", namespace, pod)
        self.event(job, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        self.store.update(
            "jobs",
            namespace,
            name,
            lambda j: j.setdefault("status", {}).update(active=1, startTime=now()),
        )
        Kubelet(self, job, pod).run()


class Kubelet:
    """Runs one pod to its end (or until it is deleted)."""

    def __init__(self, cluster: Cluster, job: Obj, pod: Obj) -> None:
        self.cluster, self.store = cluster, cluster.store
        self.job, self.pod = job, pod
        self.namespace = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.job_name = job["metadata"]["name"]

    def _set_status(self, **changes: Any) -> None:
        self.store.update("pods", self.namespace, self.name, lambda p: p["status"].update(changes))

    def _statuses(self, containers: list[Obj], state: Obj) -> list[Obj]:
        return [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": state,
            }
            for c in containers
        ]

    def _finish_job(self, condition: str, reason: str, message: str) -> None:
        def change(job: Obj) -> None:
            status = job.setdefault("status", {})
            status.pop("active", None)
            status["completionTime" if condition == "Complete" else "failed"] = (
                now() if condition == "Complete" else 1
            )
            if condition == "Complete":
                status["succeeded"] = 1
            status["conditions"] = [
                {
                    "type": condition,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": now(),
                    "lastTransitionTime": now(),
                }
            ]

        self.store.update("jobs", self.namespace, self.job_name, change)

    def _env(self, container: Obj) -> dict[str, str] | str:
        """The container's resolved environment, or why it cannot be created."""
        env: dict[str, str] = {}
        for entry in container.get("env", []):
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                env[entry["name"]] = entry.get("value", "")
                continue
            try:
                secret = self.store.get("secrets", self.namespace, ref["name"])
            except ApiError:
                return f'secret "{ref["name"]}" not found'
            data = secret.get("data") or {}
            if ref["key"] not in data:
                return f"couldn't find key {ref['key']} in Secret {self.namespace}/{ref['name']}"
            env[entry["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return env

    def _sleep(self) -> None:
        time.sleep(self.cluster.step)
        self.store.get("pods", self.namespace, self.name)  # raises once deleted

    def run(self) -> None:
        spec = self.pod["spec"]
        inits, mains = spec.get("initContainers", []), spec["containers"]
        main = next((c for c in mains if c["name"] == "task"), mains[0])
        behaviour = _behaviour(main.get("image", ""))
        self._sleep()
        if behaviour == "fake/unschedulable":
            self._set_status(
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient cpu.",
                        "lastTransitionTime": now(),
                    }
                ]
            )
            return
        self._set_status(
            conditions=[{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]
        )
        self.cluster.event(self.pod, "Normal", "Scheduled", f"assigned {self.name} to fake-node")
        if behaviour == "fake/mount-fail":
            self.cluster.event(
                self.pod,
                "Warning",
                "FailedMount",
                'MountVolume.SetUp failed for volume "workspace": no space left',
            )
            return
        for index, init in enumerate(inits):
            init_behaviour = _behaviour(init.get("image", ""))
            if match := _EXIT_RE.fullmatch(init_behaviour):
                code = int(match.group(1))
                statuses = self._statuses(inits, {"waiting": {"reason": "PodInitializing"}})
                statuses[index]["state"] = {
                    "terminated": {
                        "exitCode": code,
                        "reason": "Error",
                        "startedAt": now(),
                        "finishedAt": now(),
                    }
                }
                self._set_status(phase="Failed", initContainerStatuses=statuses)
                self._finish_job(
                    "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                )
                return
            if isinstance(problem := self._env(init), str):
                statuses = self._statuses(inits, {"waiting": {"reason": "PodInitializing"}})
                statuses[index]["state"] = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": problem}
                }
                self._set_status(initContainerStatuses=statuses)
                return
        if inits:
            self._set_status(
                initContainerStatuses=self._statuses(
                    inits, {"terminated": {"exitCode": 0, "reason": "Completed"}}
                )
            )
        waiting = {
            "fake/pull-error": ("ErrImagePull", f'failed to pull image "{main.get("image")}"'),
            "fake/bad-image": ("InvalidImageName", f'invalid image name "{main.get("image")}"'),
        }
        if behaviour in waiting:
            reason, message = waiting[behaviour]
            self._set_status(
                containerStatuses=self._statuses(
                    mains, {"waiting": {"reason": reason, "message": message}}
                )
            )
            return
        env = self._env(main)
        if isinstance(env, str):
            self._set_status(
                containerStatuses=self._statuses(
                    mains, {"waiting": {"reason": "CreateContainerConfigError", "message": env}}
                )
            )
            return
        # A kubelet serves a running container's log at once (empty at first): open it
        # before the pod says Running, or a follower could be told "waiting to start".
        self.cluster.open_log(self.namespace, self.name, main["name"])
        with self.cluster.lock:
            self.cluster.mains[(self.namespace, self.job_name)] = (
                self.namespace,
                self.name,
                main["name"],
            )
        self._set_status(
            phase="Running",
            startTime=now(),
            containerStatuses=self._statuses(mains, {"running": {"startedAt": now()}}),
        )

        def log(line: str) -> None:
            self.cluster.log(self.namespace, self.name, main["name"], line)

        log(f"fake agent: TASK_ID={env.get('TASK_ID', '')}")
        log("fake agent: args " + " ".join(main.get("args", [])))
        self._sleep()
        log("fake agent: working")
        if behaviour == "fake/evicted":
            self._set_status(
                phase="Failed",
                reason="Evicted",
                message="The node was low on resource: memory. Threshold quantity: 100Mi.",
            )
            self._finish_job(
                "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
            return
        code = self._exit_code(behaviour)
        self._sleep()
        log(f"fake agent: exiting {code}")
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": now(),
            "finishedAt": now(),
        }
        if behaviour == "fake/oom":
            terminated["reason"] = "OOMKilled"
        self._set_status(
            phase="Succeeded" if code == 0 else "Failed",
            containerStatuses=self._statuses(mains, {"terminated": terminated}),
        )
        self._sleep()
        if code == 0:
            self._finish_job(
                "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
            )
        else:
            self._finish_job(
                "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )

    def _exit_code(self, behaviour: str) -> int:
        if match := _EXIT_RE.fullmatch(behaviour):
            return int(match.group(1))
        if behaviour == "fake/oom":
            return 137
        if behaviour != "fake/hold":
            return 0
        key = (self.namespace, self.job_name)
        with self.cluster.lock:
            while key not in self.cluster.released:
                self.cluster.lock.wait(0.2)
                self.store.get("pods", self.namespace, self.name)  # raises once deleted
            return self.cluster.released.pop(key)
