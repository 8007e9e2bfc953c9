#!/usr/bin/env python3
"""Example `cancel_command` for ozw's command backend: stop a run started by dispatch.py.

ozw runs it when the server cancels a handed-off task, with OZ_RUN_ID,
OZ_EXECUTION_ID and OZ_WORKER_BACKEND=command. It finds <state root>/<run_id>/agent.json,
sends SIGTERM to the agent's whole process group, waits OZ_COMMAND_KILL_GRACE seconds
(default 10) for it to go, then SIGKILLs what is left, and writes `cancelled.json`
beside it. Cancelling a run that is unknown or already over succeeds (cancellation is
idempotent); a group that cannot be stopped is exit status 1, which ozw logs and counts.

The state is trusted only when no other user can have written it: a state root or
run directory that is a symlink, is not owned by this user or is group/world-writable,
and an agent.json that is a symlink, are refused (exit status 1) before any signal is
sent (the same rule as dispatch.py's).

Environment: OZ_COMMAND_STATE_DIR (the same as dispatch.py's), OZ_COMMAND_KILL_GRACE.
Plain standard library; runs on any python3 >= 3.8.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
import time

DEFAULT_STATE_DIR = "/tmp/ozw-command-backend"
DEFAULT_KILL_GRACE = 10.0
POLL_INTERVAL = 0.05


def process_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            stat = stream.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies do not count: an orphan may
    stay a zombie forever under an init that does not reap)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return True  # no /proc: the signal test is all we have
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stream:
                stat = stream.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def wait_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def ours(info: dict) -> bool:
    """False when the recorded leader pid now belongs to another process (pid reuse)."""
    start = process_start_time(info["pid"])
    recorded = info.get("start_time")
    return start is None or recorded is None or start == recorded


def directory_problem(path: str) -> str | None:
    """Why ``path`` is not a directory only this user controls, or None (as dispatch.py)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot be inspected ({exc.strerror or exc})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != os.geteuid():
        return f"is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})"
    if info.st_mode & 0o022:
        return f"is group- or world-writable (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def read_state(path: str) -> dict:
    """agent.json, never through a symlink. Raises OSError, ValueError."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8") as stream:
        info = json.load(stream)
    if not isinstance(info, dict):
        raise ValueError("not a JSON object")
    return info


def write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2)
            stream.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def main() -> int:
    run_id = os.environ.get("OZ_RUN_ID", "")
    if not run_id or run_id in (".", "..") or "/" in run_id:
        print(f"cancel: OZ_RUN_ID {run_id!r} is missing or invalid", file=sys.stderr)
        return 2
    execution_id = os.environ.get("OZ_EXECUTION_ID", "")
    root = os.environ.get("OZ_COMMAND_STATE_DIR") or DEFAULT_STATE_DIR
    directory = os.path.join(root, run_id)
    try:
        grace = float(os.environ.get("OZ_COMMAND_KILL_GRACE") or DEFAULT_KILL_GRACE)
    except ValueError:
        grace = DEFAULT_KILL_GRACE
    for path, what in ((root, "state directory"), (directory, "run directory")):
        if not os.path.lexists(path):
            print(f"no dispatched agent for run {run_id}: nothing to cancel")
            return 0
        problem = directory_problem(path)
        if problem is not None:
            print(f"cancel: {what} {path} {problem}: refusing to trust it", file=sys.stderr)
            return 1
    state_file = os.path.join(directory, "agent.json")
    if os.path.islink(state_file):
        print(f"cancel: {state_file} is a symlink: refusing to trust it", file=sys.stderr)
        return 1
    try:
        info = read_state(state_file)
        pgid = int(info["pgid"])
        if pgid <= 1:  # killpg(0) would be our own group, -1 everything we may signal
            raise ValueError(f"invalid process group {pgid}")
    except FileNotFoundError:
        print(f"no dispatched agent for run {run_id}: nothing to cancel")
        return 0
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cancel: cannot read the state of run {run_id}: {exc}", file=sys.stderr)
        return 1
    recorded_execution = info.get("execution_id") or ""
    if execution_id and recorded_execution and execution_id != recorded_execution:
        print(f"note: cancelling execution {recorded_execution} (asked for {execution_id})")
    if not ours(info) or not group_alive(pgid):
        print(f"run {run_id}: the agent (pid {info['pid']}) is no longer running")
        return 0
    try:
        signal_group(pgid, signal.SIGTERM)
        if not wait_gone(pgid, grace):
            print(f"run {run_id}: still running after {grace:g}s; sending SIGKILL")
            signal_group(pgid, signal.SIGKILL)
            if not wait_gone(pgid, 5.0):
                print(f"cancel: process group {pgid} survived SIGKILL", file=sys.stderr)
                return 1
    except PermissionError as exc:
        print(f"cancel: cannot signal process group {pgid}: {exc.strerror}", file=sys.stderr)
        return 1
    write_json(
        os.path.join(directory, "cancelled.json"),
        {
            "run_id": run_id,
            "execution_id": execution_id or None,
            "pid": info["pid"],
            "cancelled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    print(f"cancelled run {run_id} (process group {pgid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
