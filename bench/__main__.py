"""``python -m bench`` (``just bench``): the ozw benchmarks, as ratios to baselines.

Every row compares the worker with a baseline measured in the same run (samples
interleaved where it matters), so the numbers mean something on any machine; no row
asserts an absolute time. ``ratio`` = worker median / baseline median.

    python -m bench                   # everything (~15 s on 2 cores)
    python -m bench --quick           # small n: a smoke check
    python -m bench --only direct     # direct, docker, protocol, scale (repeatable)
    python -m bench --json out.json   # also write the results as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.stats import Row, table

NAMES = ("direct", "docker", "protocol", "scale")


def _runners(quick: bool) -> dict[str, Callable[[], list[Row]]]:
    """Name → the function that runs that benchmark."""
    from bench.direct import bench_direct
    from bench.docker import bench_docker
    from bench.protocol import bench_protocol
    from bench.scale import bench_scale

    direct_n, docker_n, batches, tasks, bursts = (5, 3, 8, 50, 1) if quick else (20, 10, 30, 200, 3)
    return {
        "direct": lambda: bench_direct(direct_n),
        "docker": lambda: bench_docker(docker_n),
        "protocol": lambda: bench_protocol(batches),
        "scale": lambda: bench_scale(tasks, bursts),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="ozw benchmarks (ratios against baselines)"
    )
    parser.add_argument("--quick", action="store_true", help="small n, for a smoke check")
    parser.add_argument(
        "--only",
        action="append",
        choices=NAMES,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(NAMES)}",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [name for name in NAMES if not args.only or name in args.only]
    runners = _runners(args.quick)
    rows: list[Row] = []
    errors = 0
    started = time.perf_counter()
    print(
        f"ozw benchmarks{' (quick)' if args.quick else ''}: python {platform.python_version()}, "
        f"{os.cpu_count()} CPU(s), {platform.machine()}; running {', '.join(selected)}",
        flush=True,
    )
    for name in selected:
        run = runners[name]
        began = time.perf_counter()
        try:
            produced = run()
        except Exception as exc:
            errors += 1
            traceback.print_exc()
            produced = [Row(name, skipped=f"ERROR: {type(exc).__name__}: {exc}")]
        rows.extend(produced)
        print(f"  {name}: {time.perf_counter() - began:.1f}s", flush=True)
    print()
    for line in table(rows):
        print(line)
    skipped = [row for row in rows if row.skipped is not None]
    sys.stdout.flush()
    for row in skipped:
        print(f"\n!!! {row.name} was NOT measured: {row.skipped}", file=sys.stderr, flush=True)
    print(f"\ntotal {time.perf_counter() - started:.1f}s")
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
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
