"""``python -m tests.conformance``: run scenarios by hand, or re-record the Go fixtures.

    python -m tests.conformance record --go-binary PATH [--go-source DIR]
        [--go-commit SHA] [--only NAME ...]
    python -m tests.conformance run NAME [--go-binary PATH] [--keep DIR]

``record`` drives the Go worker through every scenario (or ``--only`` these), writes
``tests/conformance/fixtures/go/<name>.json`` and prints which scenarios changed.
``--go-source`` (the Go worker's checkout) makes the command-backend scenarios run its
own example dispatch and cancel scripts. ``run`` prints one transcript (ozw by default).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from tests.conformance.docker_world import DockerWorld, docker_world
from tests.conformance.fixtures import FIXTURES, read_fixture, write_fixture
from tests.conformance.runner import run_scenario
from tests.conformance.scenarios import SCENARIOS, Scenario, by_name
from tests.conformance.workers import Worker, ozw_worker


def go_env(source: Path | None) -> dict[str, str]:
    """The Go example scripts for the command-backend scenarios, when the source is here."""
    if source is None:
        return {}
    examples = source / "examples" / "command-backend"
    return {
        "CONFORMANCE_DISPATCH_SCRIPT": str(examples / "dispatch.py"),
        "CONFORMANCE_CANCEL_SCRIPT": str(examples / "cancel.py"),
    }


def source_commit(source: Path | None) -> str | None:
    if source is None:
        return None
    done = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def lazy_docker(stack: contextlib.ExitStack) -> Callable[[Scenario], DockerWorld | None]:
    """The docker world for docker scenarios, started on first use and ended by ``stack``."""
    worlds: list[DockerWorld] = []

    def get(scenario: Scenario) -> DockerWorld | None:
        if scenario.settings.backend != "docker":
            return None
        if not worlds:
            worlds.append(stack.enter_context(docker_world()))
        return worlds[0]

    return get


def store(name: str, transcript: dict[str, object], *, go_commit: str, command: str) -> str:
    """Write the fixture; whether it is new, changed or the same as before."""
    before = read_fixture(name) if (FIXTURES / f"{name}.json").exists() else None
    write_fixture(name, transcript, go_commit=go_commit, command=command)
    return "new" if before is None else "same" if before == transcript else "changed"


async def record(args: argparse.Namespace) -> int:
    worker = Worker("go", args.go_binary)
    commit = args.go_commit or source_commit(args.go_source) or "unknown"
    command = "python -m tests.conformance " + shlex.join(sys.argv[1:])
    names = args.only or [s.name for s in SCENARIOS]
    scenarios = by_name()
    changed = []
    with contextlib.ExitStack() as stack:
        docker = lazy_docker(stack)
        for name in names:
            scenario = scenarios[name]
            transcript = await run_scenario(
                scenario, worker, extra_env=go_env(args.go_source), docker=docker(scenario)
            )
            status = store(name, transcript, go_commit=commit, command=command)
            if status != "same":
                changed.append(name)
            waits = transcript["timed_out"]
            print(f"{status:8} {name}" + (f"  (timed out waiting for: {waits})" if waits else ""))
    print(f"{len(changed)} of {len(names)} scenarios changed: {', '.join(changed) or 'none'}")
    return 0


async def run_one(args: argparse.Namespace) -> int:
    worker = Worker("go", args.go_binary) if args.go_binary else ozw_worker()
    scenario = by_name()[args.name]
    with contextlib.ExitStack() as stack:
        transcript = await run_scenario(
            scenario,
            worker,
            extra_env=go_env(args.go_source),
            keep=args.keep,
            docker=lazy_docker(stack)(scenario),
        )
    print(json.dumps(transcript, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance")
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="re-record the Go fixtures")
    rec.add_argument("--go-binary", required=True)
    rec.add_argument("--go-source", type=Path)
    rec.add_argument("--go-commit")
    rec.add_argument("--only", nargs="*", choices=sorted(by_name()))
    one = commands.add_parser("run", help="print one scenario's transcript")
    one.add_argument("name", choices=sorted(by_name()))
    one.add_argument("--go-binary")
    one.add_argument("--go-source", type=Path)
    one.add_argument("--keep")
    args = parser.parse_args()
    for name in ("go_binary", "keep"):
        if getattr(args, name, None):
            setattr(args, name, Path(getattr(args, name)).resolve())
    return trio.run(record if args.command == "record" else run_one, args)


if __name__ == "__main__":
    sys.exit(main())
