"""Ports for the servers the tests start (a collector, kube-apiserver, a registry...).

A port the kernel hands out for ``bind(0)`` comes from its ephemeral range, which every
outgoing connection also draws from: between the choice and the server's own bind, a
client of another test may take it (kube-apiserver then exits with "address already
in use"). These ports come from below that range, where only listeners live, and none
is handed out twice in one test session.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Final

LOWEST: Final = 10000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, below the ephemeral range."""
    high = _ephemeral_low() - 1
    for _ in range(200):
        port = random.randint(LOWEST, high) if high > LOWEST else 0
        if port in _handed_out or not _bindable(port):
            continue
        if port == 0:  # no room below the ephemeral range: the kernel's choice
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")
