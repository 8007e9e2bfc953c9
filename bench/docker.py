"""Docker backend: assignment → agent running / task done, against a bare ``docker run``.

Images are the test suite's (``tests/docker/conftest.py``): a busybox-static task
image and an agent sidecar image whose ``/entrypoint.sh`` is the shell stand-in
(it prints ``standin: start`` first, then its argv and environment, and exits 0).
Both are ``docker import``-ed, so the worker runs with ``pull_policy =
"if-not-present"`` (``"always"`` would ask a registry that does not have them).

Worker side: as for the direct backend, the clock starts as the dispatch server
writes the ``task_assignment``; "agent running" is the worker relaying the
container's first stdout line (``docker start --attach`` output); "done" is the
server's receipt of ``task_completed``. The first (calibration) task fills the
sidecar volume and is not timed; later tasks reuse it, as a long-lived worker does.

Baseline: ``docker run --rm`` of the same image with the same sidecar volume mounted
at ``/agent``, the same working directory, environment, entrypoint and arguments
(read from the worker's own task run), stdout/stderr piped; "agent running" is the
first line read from its stdout, "done" its exit (the CLI returns once the
container has exited and been removed). Samples alternate worker / baseline.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

from tests.docker.engine import NoEngine, docker_engine

from bench.harness import Session, run_one, run_trio, task_phases, with_worker
from bench.stats import Row, median
from ozw.backends.base import TaskRun
from ozw.backends.docker import DockerBackend, DockerTaskRun
from ozw.config import DockerConfig
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog
from ozw.wire.codec import Task, TaskAssignment

WORKDIR = "/workspace"
ENTRYPOINT = "/agent/entrypoint.sh"


class CapturingDockerBackend(DockerBackend):
    """The docker backend, keeping each task's run so its container can be copied."""

    def __init__(self, config: DockerConfig, environ: dict[str, str], worker_id: str) -> None:
        super().__init__(config, worker_id=worker_id, cleanup=True, environ=environ)
        self.runs: dict[str, DockerTaskRun] = {}

    def open_task(self, params: TaskParams, log: TaskLog) -> TaskRun:
        run = super().open_task(params, log)
        if isinstance(run, DockerTaskRun):
            self.runs[params.task_id] = run
        return run


def assignment(task_id: str, image: str, agent: str) -> TaskAssignment:
    return TaskAssignment(
        task_id,
        Task(id=task_id, title="benchmark", raw={"id": task_id, "title": "benchmark"}),
        execution_id=f"exec-{task_id}",
        docker_image=image,
        sidecar_image=agent,
    )


def bare_docker_run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``docker run ...``; return (time to its first stdout line, time to its exit)."""
    started = time.perf_counter()
    with subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None
        process.stdout.readline()
        first = time.perf_counter()
        _, err = process.communicate()
    done = time.perf_counter()
    if process.returncode != 0:
        raise RuntimeError(f"bare docker run exited with {process.returncode}: {err.decode()}")
    return first - started, done - started


def baseline_command(run: DockerTaskRun, image: str) -> list[str]:
    """``docker run --rm`` of the container the worker created for ``run``."""
    command = ["docker", "run", "--rm", f"--workdir={WORKDIR}"]
    command += [sidecar.volume_arg() for sidecar in run.sidecars]
    command += [f"--env={name}={value}" for name, value in run.env.items()]
    # As ozw (and the Go worker) create it: the command, not --entrypoint.
    command += [image, ENTRYPOINT, *run.params.base_args]
    return command


def bench_docker(n: int) -> list[Row]:
    start = Row(
        "docker: assignment → agent running",
        goal="≤ 1.15x",
        note="worker: send → container's 1st stdout line relayed; base: docker run → 1st line",
    )
    done = Row(
        "docker: assignment → task_completed",
        goal="≤ 1.15x",
        note="worker: send → server has task_completed; base: docker run --rm → exit",
    )
    try:
        with docker_engine() as (host, private):
            _measure(host, private, n, start, done)
    except NoEngine as exc:
        start.skipped = done.skipped = f"no Docker engine: {exc}"
    return [start, done]


def _measure(host: str, private: bool, n: int, start: Row, done: Row) -> None:
    # The test suite's image builders; importing them needs pytest (a dev dependency).
    from tests.docker.conftest import (
        IMAGES_DIR,
        Engine,
        busybox_rootfs,
        files_rootfs,
        import_image,
    )

    engine = Engine(host, private)
    prefix = f"ozwbench-{uuid.uuid4().hex[:6]}"
    image, agent = f"{prefix}/task:1", f"{prefix}/agent:1"
    import_image(engine, image, busybox_rootfs())
    script = (IMAGES_DIR / "standin-entrypoint.sh").read_bytes()
    import_image(engine, agent, files_rootfs({"/entrypoint.sh": (script, 0o755)}))
    environ = {**os.environ, "DOCKER_HOST": host}
    config = DockerConfig(pull_policy="if-not-present", kill_grace=2)
    backend = CapturingDockerBackend(config, environ, worker_id=prefix)
    volumes: list[str] = []

    async def body(session: Session) -> None:
        calibrate = f"{prefix}-calibrate"
        await run_one(session, assignment(calibrate, image, agent))
        run = backend.runs[calibrate]
        volumes.extend(s.volume for s in run.sidecars)
        command = baseline_command(run, image)
        await run_one(session, assignment(f"{prefix}-warm", image, agent))
        bare_docker_run(command, environ)
        timed = []
        for i in range(n):
            marks = await run_one(session, assignment(f"{prefix}-{i}", image, agent))
            timed.append(marks)
            start.worker.append(marks["agent_first"] - marks["sent"])
            done.worker.append(marks["terminal"] - marks["sent"])
            first, exited = bare_docker_run(command, environ)
            start.baseline.append(first)
            done.baseline.append(exited)
        done.phases = task_phases(timed)
        done.phases["(base) docker run → 1st line"] = median(start.baseline)
        done.phases["(base) 1st line → exit"] = median(
            [d - s for d, s in zip(done.baseline, start.baseline, strict=True)]
        )

    try:
        run_trio(lambda: with_worker(backend, config, body, worker_id=prefix))
    finally:
        if not private:
            engine.run("image", "rm", "--force", image, agent, check=False)
            if volumes:
                engine.run("volume", "rm", "--force", *volumes, check=False)
    engine_kind = "private dockerd (vfs)" if private else f"DOCKER_HOST={host}"
    start.note += f"; engine: {engine_kind}"
