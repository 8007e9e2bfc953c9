"""Direct backend: assignment → agent running / task done, against a bare spawn.

Worker side: the in-process dispatch server sends a ``task_assignment``; the clock
starts just before the frame is written. "Agent running" is the moment the worker
relays the agent's first stdout line into its task log (the stand-in prints it as
soon as its interpreter is up); "done" is the server's receipt of ``task_completed``.

Baseline: ``subprocess.Popen`` of the same stand-in with the exact argv and
environment the worker gave it (read from the backend's task run after a calibration
task) and an empty working directory, stdout/stderr piped. "Agent running" is
``readline()`` returning its first line; "done" is EOF + ``wait()``. Both sides
therefore observe the same event (the first line through a pipe) with the same
clock, and both pay the same interpreter start-up, so the difference is the
worker's overhead.

The agent's ``PATH`` starts with the directory of the running interpreter, so the
stand-in's ``#!/usr/bin/env python3`` finds a real interpreter rather than a shim (a
pyenv shim is a bash script that costs ~60 ms per start: equal on both sides, it
would only dilute the ratio).

Samples alternate worker / baseline, so drift (page cache, CPU frequency, other
load) hits both alike. The baseline runs synchronously inside the Trio thread while
the worker sits idle between tasks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Session, run_one, run_trio, task_phases, with_worker
from bench.stats import Row, median
from ozw.backends.direct import DirectBackend, DirectTaskRun
from ozw.config import DirectConfig
from ozw.tasks.params import TaskParams
from ozw.telemetry.logs import TaskLog
from ozw.wire.codec import Task, TaskAssignment

STANDIN = Path(__file__).resolve().parents[1] / "examples" / "agent" / "oz"


class CapturingDirectBackend(DirectBackend):
    """The direct backend, keeping each task's run so its agent argv/env can be read."""

    def __init__(self, config: DirectConfig, environ: dict[str, str]) -> None:
        super().__init__(config, cleanup=True, environ=environ)
        self.runs: dict[str, DirectTaskRun] = {}

    def open_task(self, params: TaskParams, log: TaskLog) -> DirectTaskRun:
        run = super().open_task(params, log)
        self.runs[params.task_id] = run
        return run


def agent_environ() -> dict[str, str]:
    """The worker's environment with this interpreter's directory first on PATH."""
    here = os.path.dirname(os.path.realpath(sys.executable))
    return {**os.environ, "PATH": os.pathsep.join([here, os.environ.get("PATH", os.defpath)])}


def assignment(task_id: str) -> TaskAssignment:
    return TaskAssignment(
        task_id,
        Task(id=task_id, title="benchmark", raw={"id": task_id, "title": "benchmark"}),
        execution_id=f"exec-{task_id}",
    )


def bare_spawn(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Spawn the agent; return (time to its first stdout line, time to its exit)."""
    started = time.perf_counter()
    with subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        process.stdout.readline()
        first = time.perf_counter()
        process.communicate()
    done = time.perf_counter()
    if process.returncode != 0:
        raise RuntimeError(f"the bare stand-in exited with {process.returncode}")
    return first - started, done - started


def bench_direct(n: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="ozw-bench-direct-") as tmp:
        root = Path(tmp)
        config = DirectConfig(
            workspace_root=str(root / "workspaces"), oz_path=str(STANDIN), kill_grace=2
        )
        backend = CapturingDirectBackend(config, agent_environ())
        cwd = root / "bare-cwd"
        cwd.mkdir()
        start = Row(
            "direct: assignment → agent running",
            note="worker: send → agent's 1st stdout line relayed; base: Popen → readline()",
        )
        done = Row(
            "direct: assignment → task_completed",
            note="worker: send → server has task_completed; base: Popen → EOF + wait()",
        )

        async def body(session: Session) -> None:
            # Calibration (and warm-up): the exact argv and environment the agent gets.
            await run_one(session, assignment("bench-direct-calibrate"))
            run = backend.runs["bench-direct-calibrate"]
            assert run.agent_env is not None
            argv = [backend.oz_command(), *run.params.base_args]
            env = dict(run.agent_env)
            for warm in range(2):
                await run_one(session, assignment(f"bench-direct-warm-{warm}"))
                bare_spawn(argv, env, str(cwd))
            for i in range(n):
                task_id = f"bench-direct-{i}"
                marks = await run_one(session, assignment(task_id))
                start.worker.append(marks["agent_first"] - marks["sent"])
                done.worker.append(marks["terminal"] - marks["sent"])
                first, exited = bare_spawn(argv, env, str(cwd))
                start.baseline.append(first)
                done.baseline.append(exited)
            timed = [session.probe.marks[f"bench-direct-{i}"] for i in range(n)]
            done.phases = task_phases(timed)
            done.phases["(base) spawn → 1st line"] = median(start.baseline)
            done.phases["(base) 1st line → exit"] = median(
                [d - s for d, s in zip(done.baseline, start.baseline, strict=True)]
            )

        run_trio(lambda: with_worker(backend, config, body, worker_id="bench-direct"))
        return [start, done]
