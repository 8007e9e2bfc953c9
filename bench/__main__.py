"""``python -m bench`` (``just bench``): the ozw benchmarks, as ratios to baselines.

Every row compares the worker with a baseline measured in the same run (samples
interleaved where it matters), so the numbers mean something on any machine; no row
asserts an absolute time. ``ratio`` = worker median / baseline median.

    python -m bench                   # everything (~70 s on 2 cores)
    python -m bench --quick           # small n: a smoke check
    python -m bench --only direct     # direct, docker, protocol, scale (repeatable)
    python -m bench --json out.json   # also write the results as JSON
    python -m bench --require-all     # exit 1 unless every row was measured (CI)
    python -m bench --peer PATH       # also rows beside the Go worker at PATH (bench/peer.py)

A full run of everything (no ``--quick``, no ``--only``) rewrites bench/RESULTS.md.

Each benchmark runs in a fresh interpreter of its own: no row depends on what ran
before it (the heap after 1,000 tasks slows some rows by half, and their baselines
unevenly).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.results import RESULTS, machine, markdown
from bench.stats import Row, table

NAMES = ("many", "direct", "docker", "protocol", "scale", "reconnect")
"""In run order."""


def _runners(quick: bool, peer: str | None = None) -> dict[str, Callable[[], list[Row]]]:
    """Name → the function that runs that benchmark."""
    from bench.direct import bench_direct
    from bench.docker import bench_docker
    from bench.many import bench_many
    from bench.peer import bench_peer
    from bench.protocol import bench_protocol
    from bench.reconnect import bench_reconnect
    from bench.scale import bench_scale

    direct_n, docker_n, batches, tasks, bursts = (5, 3, 8, 50, 1) if quick else (20, 10, 30, 200, 3)
    burst_size, bursts = (300, 1) if quick else (5000, 2)
    owed, reconnects = (100, 1) if quick else (1000, 5)
    many, probes, steady = (50, 10, 0.5) if quick else (1000, 200, 2.0)
    return {
        "direct": lambda: bench_direct(direct_n),
        "docker": lambda: bench_docker(docker_n),
        "protocol": lambda: bench_protocol(batches),
        "scale": lambda: bench_scale(tasks, burst_size, bursts),
        "many": lambda: bench_many(many, probes, steady),
        "reconnect": lambda: bench_reconnect(owed, reconnects),
        "peer": lambda: bench_peer(Path(peer or ""), *((1, [100]) if quick else (3, [100, 1000]))),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="ozw benchmarks (ratios against baselines)"
    )
    parser.add_argument("--quick", action="store_true", help="small n, for a smoke check")
    parser.add_argument(
        "--only",
        action="append",
        choices=(*NAMES, "peer"),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(NAMES)}",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--results",
        metavar="PATH",
        help="write the Markdown results to PATH (default: bench/RESULTS.md after a full run)",
    )
    parser.add_argument(
        "--peer",
        metavar="PATH",
        help="the Go worker's binary: add rows of both workers side by side (bench/peer.py)",
    )
    parser.add_argument(
        "--peer-commit", metavar="SHA", help="the Go worker's commit, for bench/RESULTS.md"
    )
    parser.add_argument("--rows-out", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument(
        "--require-all",
        action="store_true",
        help="exit 1 unless every row was measured (a smoke check; never a time limit)",
    )
    return parser.parse_args(argv)


def run_here(names: Sequence[str], quick: bool, out: str, peer: str | None) -> int:
    """Run ``names`` in this process and write their rows to ``out`` (JSON)."""
    runners = _runners(quick, peer)
    rows: list[Row] = []
    for name in names:
        rows.extend(runners[name]())
    Path(out).write_text(json.dumps([dataclasses.asdict(row) for row in rows]))
    return 0


def run_apart(name: str, quick: bool, peer: str | None = None) -> list[Row]:
    """Run one benchmark in a fresh interpreter and return its rows."""
    with tempfile.TemporaryDirectory(prefix="ozw-bench-") as scratch:
        out = Path(scratch) / "rows.json"
        command = [sys.executable, "-m", "bench", "--only", name, "--rows-out", str(out)]
        command += ["--quick"] if quick else []
        command += ["--peer", peer] if peer else []
        child = subprocess.run(command, check=False)
        if child.returncode != 0 or not out.exists():
            raise RuntimeError(f"exit status {child.returncode} (its output is above)")
        return [Row(**fields) for fields in json.loads(out.read_text())]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # --peer adds its rows to whatever runs; a child of run_apart runs exactly its --only.
    selected = [
        name
        for name in ((*NAMES, "peer") if args.peer else NAMES)
        if not args.only or name in args.only or (name == "peer" and not args.rows_out)
    ]
    if args.rows_out:
        return run_here(selected, args.quick, args.rows_out, args.peer)
    rows: list[Row] = []
    errors = 0
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    print(
        f"ozw benchmarks{' (quick)' if args.quick else ''}: python {platform.python_version()}, "
        f"{os.cpu_count()} CPU(s), {platform.machine()}; running {', '.join(selected)}",
        flush=True,
    )
    for name in selected:
        began = time.perf_counter()
        try:
            produced = run_apart(name, args.quick, args.peer)
        except Exception as exc:
            errors += 1
            traceback.print_exc()
            produced = [Row(name, skipped=f"ERROR: {type(exc).__name__}: {exc}")]
        rows.extend(produced)
        print(f"  {name}: {time.perf_counter() - began:.1f}s", flush=True)
    print()
    for line in table(rows):
        print(line)
    skipped = [row for row in rows if row.skipped is not None or row.n == 0]
    sys.stdout.flush()
    for row in skipped:
        why = row.skipped or "no samples"
        print(f"\n!!! {row.name} was NOT measured: {why}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    print(f"\ntotal {elapsed:.1f}s")
    results = args.results or (RESULTS if not args.quick and not args.only else None)
    if results:
        header = machine()
        if args.peer:
            header["peer"] = (
                f"the Go worker oz-agent-worker at commit {args.peer_commit or 'unknown'} "
                "(rows `peer:`; baseline = Go, ratio = ozw / Go)"
            )
        header["run"] = (
            f"`python -m bench{' --quick' if args.quick else ''}"
            f"{' --peer GO_WORKER' if args.peer else ''}` in {elapsed:.0f}s; "
            f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
            "(the machine is shared: wall-clock rows move with it)"
        )
        Path(results).write_text(markdown(rows, header))
        print(f"wrote {results}")
    if args.json:
        document = {
            "quick": args.quick,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rows": [row.as_json() for row in rows],
        }
        Path(args.json).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    if errors or (args.require_all and skipped):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
