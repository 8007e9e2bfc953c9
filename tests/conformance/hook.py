#!/usr/bin/env python3
"""What a worker runs besides the agent, in conformance scenarios: set-up, teardown,
dispatch and cancel commands. It records what it was given, then behaves as told.

    hook.py RECORDS NAME [exit N | block]

writes ``RECORDS/NAME-<OZ_RUN_ID>.json`` ({"env", "cwd", "stdin"}; stdin only for
``dispatch``), then exits N (default 0) or, with ``block``, sleeps until killed.
With ``CONFORMANCE_DISPATCH_SCRIPT`` set, ``dispatch`` and ``cancel`` then run that
script (the Go worker's own example, when recording with its source) with the same
input and exit with its status (or, with ``block``, sleep on after it). Plain standard library.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> int:
    records, name, *action = sys.argv[1:]
    stdin = sys.stdin.read() if name == "dispatch" else None
    run_id = os.environ.get("OZ_RUN_ID", "unknown")
    record = {"env": dict(os.environ), "cwd": os.getcwd(), "stdin": stdin}
    path = os.path.join(records, f"{name}-{run_id}.json")
    with open(f"{path}.tmp", "w", encoding="utf-8") as stream:
        json.dump(record, stream)
    os.replace(f"{path}.tmp", path)
    script = os.environ.get(f"CONFORMANCE_{name.upper()}_SCRIPT")
    status = 0
    if script:
        status = subprocess.run([sys.executable, script], input=stdin, text=True).returncode
    if action == ["block"]:  # after the script too: the worker must be the one to stop it
        while True:
            time.sleep(3600)
    if script:
        return status
    return int(action[1]) if action[:1] == ["exit"] else 0


if __name__ == "__main__":
    sys.exit(main())
