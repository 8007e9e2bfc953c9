"""``python -m tests.kubernetes.fakeapi``: run the fake API server until killed.

Prints ``listening on http://127.0.0.1:<port>`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import sys

from tests.kubernetes.fakeapi.server import serve
from tests.kubernetes.fakeapi.state import FakeApi


def main() -> None:
    parser = argparse.ArgumentParser(prog="fakeapi")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--step", type=float, default=0.05, help="seconds between pod steps")
    parser.add_argument("--token", help="require this bearer token")
    parser.add_argument(
        "--deny", action="append", default=[], help="verb:resource[/sub] not allowed"
    )
    parser.add_argument("--watch-timeout", type=float, default=300.0)
    args = parser.parse_args()
    api = FakeApi(
        step=args.step,
        token=args.token,
        watch_timeout=args.watch_timeout,
    )
    api.denied.update(args.deny)
    server = serve(api, args.port)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
