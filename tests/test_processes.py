"""ProcessRunner: exit codes, live relay, group-wide termination, kill_all."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from ozw.backends.execution.machine_limits import start_refused
from ozw.backends.execution.processes import MAX_LINE, ProcessRunner
from ozw.telemetry.logs import TaskLog
from tests.support.event_loops import on_both_loops
from tests.support.log_lines import Lines

ENV = {"PATH": "/usr/bin:/bin"}


async def sh(runner: ProcessRunner, script: str, stdin: bytes | None = None) -> int:
    return await runner.run(
        ["/bin/sh", "-c", script], log=TaskLog("t-1"), label="x", env=ENV, stdin=stdin
    )


@pytest.mark.parametrize(("script", "code"), [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 137)])
@on_both_loops
async def test_exit_codes_are_normalised(script: str, code: int) -> None:
    assert await sh(ProcessRunner(), script) == code


@on_both_loops
async def test_output_is_tagged_and_long_lines_are_split(lines: Lines) -> None:
    script = f"echo out; echo err >&2; head -c {2 * MAX_LINE + 10} /dev/zero | tr '\\0' a"
    assert await sh(ProcessRunner(), script) == 0
    out = lines.stream("x stdout")
    assert out[0] == "out"
    assert [len(line) for line in out[1:]] == [MAX_LINE, MAX_LINE, 10]
    assert lines.stream("x stderr") == ["err"]
    assert all(getattr(r, "task_id", None) == "t-1" for r in lines.records)


@on_both_loops
async def test_stdin_is_fed(lines: Lines) -> None:
    assert await sh(ProcessRunner(), "cat", stdin=b"hello\nworld") == 0
    assert lines.stream("x stdout") == ["hello", "world"]


@on_both_loops
async def test_output_written_while_stopping_is_relayed(lines: Lines) -> None:
    runner = ProcessRunner(kill_grace=5)
    ready = lines.event("ready")
    script = "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done"
    async with anyio.create_task_group() as nursery:
        nursery.start_soon(sh, runner, script)
        with anyio.fail_after(5):
            await ready.wait()
        nursery.cancel_scope.cancel()
    assert lines.stream("x stdout") == ["ready", "bye"]


PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Make this process adopt orphans and not reap them: an init that never reaps
    (a container's PID 1 often does not), made deterministic."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.fail("prctl(PR_SET_CHILD_SUBREAPER) failed: the test needs Linux >= 3.4")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass


@pytest.mark.usefixtures("subreaper")
@on_both_loops
async def test_orphaned_zombies_do_not_hold_up_termination(lines: Lines) -> None:
    # The orphaned sleep dies of SIGTERM and stays a zombie of the group: that must
    # not count as "still running", or every cancel would wait the full grace period.
    runner = ProcessRunner(kill_grace=5)
    ready = lines.event("ready")
    start = anyio.current_time()
    async with anyio.create_task_group() as nursery:
        nursery.start_soon(sh, runner, "(sleep 100 &); echo ready; sleep 100")
        with anyio.fail_after(5):
            await ready.wait()
        nursery.cancel_scope.cancel()
    assert anyio.current_time() - start < 2
    assert runner.live_groups == frozenset()


@on_both_loops
async def test_kill_all_kills_every_group_at_once(lines: Lines) -> None:
    runner = ProcessRunner(kill_grace=30)
    ready = [lines.event("ready 0"), lines.event("ready 1")]
    codes: list[int] = []

    async def run(i: int) -> None:
        codes.append(await sh(runner, f"trap '' TERM; echo ready {i}; sleep 100"))

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(run, 0)
        nursery.start_soon(run, 1)
        with anyio.fail_after(5):
            for event in ready:
                await event.wait()
            runner.kill_all()
    assert codes == [137, 137]


@on_both_loops
async def test_input_a_detached_grandchild_never_reads_does_not_hold_up_the_result(
    lines: Lines, tmp_path: Path
) -> None:
    # The leader hands its stdin to a setsid child that never reads, then exits 0: the
    # bigger-than-a-pipe input must not keep run() writing (a dispatch would time out).
    pidfile = tmp_path / "pid"
    # An asynchronous list gets /dev/null as stdin unless it is passed on via fd 3; the
    # leader waits until the child has left its group (else our SIGKILL to the group
    # after the leader's exit would take it down before setsid).
    script = (
        f"exec 3<&0; setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' <&3 >/dev/null 2>&1 &"
        f" while [ ! -s {pidfile} ]; do :; done"
    )
    try:
        with anyio.fail_after(10):
            code = await sh(ProcessRunner(kill_grace=1), script, stdin=b"x" * (1024 * 1024))
        assert code == 0
    finally:
        # The sleeper left the group on purpose: tidy it up ourselves.
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


START_UNDER_A_LOW_FD_LIMIT = """
import os, resource, anyio
from ozw.backends.execution.processes import ProcessRunner
from ozw.telemetry.logs import TaskLog

async def main():
    in_use = len(os.listdir("/proc/self/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 1, hard))
    try:
        await ProcessRunner().run(["true"], log=TaskLog("t"), label="agent", env={})
    except OSError as exc:
        print(exc.errno, exc.strerror)

anyio.run(main, backend=os.environ["LOOP"])
"""


@pytest.mark.parametrize("loop", ["trio", "asyncio"])
def test_a_start_refused_by_the_open_file_limit_names_the_limit(loop: str) -> None:
    # A real start in a child interpreter whose open-file limit leaves no room for pipes.
    result = subprocess.run(
        [sys.executable, "-c", START_UNDER_A_LOW_FD_LIMIT],
        env={**os.environ, "LOOP": loop},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    code, _, text = result.stdout.strip().partition(" ")
    assert int(code) == errno.EMFILE, result.stdout + result.stderr
    assert text.startswith("the worker's open-file limit is reached (RLIMIT_NOFILE ")
    assert "`ulimit -n`" in text
    assert text.endswith("lower max_concurrent_tasks or raise the limit")


def test_other_start_failures_keep_their_own_words() -> None:
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory")
    assert start_refused(missing) is missing
    assert "RLIMIT_NPROC" in (start_refused(OSError(errno.EAGAIN, "x")).strerror or "")
