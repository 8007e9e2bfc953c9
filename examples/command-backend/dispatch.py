#!/usr/bin/env python3
"""Example `dispatch_command` for ozw's command backend: run each task on this host.

ozw runs this script with the dispatch payload (docs/protocol.md, "command") on stdin.
It starts the agent CLI detached (its own session, so it outlives this script and
the worker), writes what `cancel.py` needs into a per-run state directory and exits
0, which tells ozw the task was handed off. Any problem is one line on stderr and a
non-zero exit status, which ozw reports as `dispatch_command` with that line. A
failure after the agent started (its state cannot be recorded) stops the agent
again first: nothing may run that cancel.py cannot find.

It stands in for a real scheduler (Nomad, Slurm, a batch service): replace the
`launch` function with a call to yours and keep the rest.

Environment (set them with the backend's configured `environment`):

  OZ_COMMAND_STATE_DIR  state root (default /tmp/ozw-command-backend); each run gets
                        <root>/<run_id>/ (0700) with agent.log, agent.json, workspace/.
                        The root is created 0700 and refused when it is a symlink, is
                        not owned by this user or is group/world-writable: whoever can
                        write there could redirect our files or, through agent.json,
                        make cancel.py signal any process group of ours.
  OZ_COMMAND_AGENT      the agent CLI to run (default: the stand-in ../agent/oz next
                        to this folder; point it at Warp's real `oz` in production)
  OZ_RUN_ID, OZ_EXECUTION_ID, ...   set by ozw (the payload carries the same values)

The agent gets only HOME, TMPDIR, PATH and LANG of this script's environment plus
the task environment from the payload (which holds the task's secrets): nothing of
the worker's own environment reaches it. The secrets are never written to disk.

Plain standard library; runs on any python3 >= 3.8.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time

PAYLOAD_VERSION = 1
DEFAULT_STATE_DIR = "/tmp/ozw-command-backend"
HOST_VARIABLES = ("HOME", "TMPDIR", "PATH", "LANG")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_AGENT = os.path.join(os.path.dirname(HERE), "agent", "oz")


class DispatchError(Exception):
    """A problem worth one line on stderr."""


def state_root() -> str:
    return os.environ.get("OZ_COMMAND_STATE_DIR") or DEFAULT_STATE_DIR


def directory_problem(path: str) -> str | None:
    """Why ``path`` is not a directory only this user controls, or None."""
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


def private_directory(path: str, what: str) -> None:
    """Create ``path`` (0700) unless it exists; refuse one this user does not control."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise DispatchError(f"cannot create {what} {path}: {exc.strerror or exc}") from exc
    problem = directory_problem(path)
    if problem is not None:
        raise DispatchError(f"{what} {path} {problem}: refusing to use it")


def run_directory(root: str, run_id: str) -> str:
    """<root>/<run_id>; refuses ids that would name anything else."""
    if not run_id or run_id in (".", "..") or "/" in run_id or "\0" in run_id:
        raise DispatchError(f"run id {run_id!r} cannot name a state directory")
    return os.path.join(root, run_id)


def read_payload(stream) -> dict:
    try:
        payload = json.load(stream)
    except ValueError as exc:
        raise DispatchError(f"the payload on stdin is not JSON: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("version") != PAYLOAD_VERSION:
        version = payload.get("version") if isinstance(payload, dict) else None
        raise DispatchError(f"unsupported payload version {version!r} (expected 1)")
    for key, kind in (("run_id", str), ("base_args", list), ("env", dict)):
        if not isinstance(payload.get(key), kind):
            raise DispatchError(f"payload field {key!r} is missing or not a {kind.__name__}")
    return payload


def process_state(pid: int) -> tuple[str, str] | None:
    """(state letter, start time) of a process from /proc; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            stat = stream.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) <= 19:
        return None
    return fields[0].decode(), fields[19].decode()


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a process (guards against pid reuse); None if unknown."""
    state = process_state(pid)
    return state[1] if state is not None else None


def still_running(info: dict) -> bool:
    """Whether the agent recorded in ``info`` is still the same live (non-zombie) process."""
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    state = process_state(pid)
    if state is None or state[0] in ("Z", "X"):
        return False
    return info.get("start_time") in (None, state[1])


def write_json(path: str, data: dict) -> None:
    """Write ``path`` atomically (cancel.py never reads half a file), 0600, never
    through a symlink."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_state(path: str) -> dict | None:
    """The recorded state of an earlier dispatch; None when there is none (or it is
    unreadable). A symlink in its place is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise DispatchError(f"{path} is a symlink: refusing to use it") from exc
        return None
    try:
        with os.fdopen(fd, encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stop_group(process: subprocess.Popen) -> None:
    """SIGKILL a just-started agent's whole group and reap its leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def agent_environment(payload_env: dict) -> dict:
    env = {name: os.environ[name] for name in HOST_VARIABLES if name in os.environ}
    env.update({str(k): str(v) for k, v in payload_env.items()})
    return env


def launch(payload: dict, directory: str) -> tuple[subprocess.Popen, dict]:
    """Start the agent detached; returns it and what cancel.py needs (no secrets)."""
    agent = os.environ.get("OZ_COMMAND_AGENT") or DEFAULT_AGENT
    argv = [agent, *map(str, payload["base_args"])]
    workspace = os.path.join(directory, "workspace")
    private_directory(workspace, "workspace")
    log_path = os.path.join(directory, "agent.log")
    try:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise DispatchError(f"cannot open {log_path}: {exc.strerror or exc}") from exc
    try:
        process = subprocess.Popen(
            argv,
            cwd=workspace,
            env=agent_environment(payload["env"]),
            stdin=subprocess.DEVNULL,
            stdout=log_fd,  # never our stdout/stderr: ozw reads those until they close
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, outlives us; cancel.py kills it
            close_fds=True,
        )
    except OSError as exc:
        raise DispatchError(f"cannot start the agent {agent}: {exc.strerror or exc}") from exc
    finally:
        os.close(log_fd)
    return process, {
        "run_id": payload["run_id"],
        "execution_id": payload.get("execution_id"),
        "pid": process.pid,
        "pgid": process.pid,
        "start_time": process_start_time(process.pid),
        "argv": argv,
        "workspace": workspace,
        "log": log_path,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def dispatch(payload: dict) -> dict:
    root = state_root()
    directory = run_directory(root, payload["run_id"])
    parent = os.path.dirname(os.path.abspath(root))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise DispatchError(f"cannot create {parent}: {exc.strerror or exc}") from exc
    private_directory(root, "state directory")
    private_directory(directory, "run directory")
    state_file = os.path.join(directory, "agent.json")
    previous = read_state(state_file)
    if previous is not None and still_running(previous):
        raise DispatchError(
            f"run {payload['run_id']} already has a live agent (pid {previous['pid']})"
        )
    sidecars = payload.get("sidecars") or []
    print(
        f"note: running on this host; image {payload.get('docker_image')!r} "
        f"and {len(sidecars)} sidecar(s) are not used"
    )
    process, info = launch(payload, directory)
    try:
        write_json(state_file, info)
        print(f"dispatched run {info['run_id']}: pid {info['pid']}, log {info['log']}")
        sys.stdout.flush()
    except BaseException as exc:
        # Unrecorded, the agent could never be cancelled: it must not outlive us.
        stop_group(process)
        raise DispatchError(
            f"cannot record the agent in {state_file} ({describe(exc)}); the agent was stopped"
        ) from exc
    return info


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def terminated(signum: int, frame: object) -> None:
    """SIGTERM (ozw stopping us after dispatch_timeout) as an exception, so a started
    agent is recorded or stopped, never left running unknown."""
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, terminated)
    try:
        dispatch(read_payload(sys.stdin))
    except DispatchError as exc:
        print(f"dispatch: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line for ozw, never a traceback
        print(f"dispatch: unexpected error: {describe(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
