"""Every deadline of a stop, in the order a stop meets them.

A graceful stop (first SIGINT/SIGTERM, ``--max-tasks`` reached, the end of a demo or
smoke run) takes no new work and cancels the running tasks. Each task's teardown
then runs shielded, bounded by the backend's ``teardown_timeout`` (the direct backend
adds :data:`WORKSPACE_REMOVAL_MARGIN` for removing a large workspace) plus
:data:`TEARDOWN_MARGIN`, our backstop should a backend overrun its own deadline.
The whole wait for the tasks is bounded by the ``shutdown_grace`` setting (30 s by
default); tasks still there after it are killed and given :data:`FORCED_WAIT` to
unwind. The server is then given :data:`FLUSH_TIMEOUT` to take the messages still
owed, and the WebSocket :data:`CLOSE_WAIT` to close (its close handshake alone is
bounded by :data:`CLOSE_TIMEOUT`). Last, each backend releases what it holds within
:data:`BACKEND_CLOSE_TIMEOUT`.

A forced stop (a second signal) skips the grace: everything is killed at once, the
tasks get :data:`FORCED_WAIT` to unwind and the last messages :data:`FORCED_FLUSH`.
"""

from __future__ import annotations

from typing import Final

TEARDOWN_MARGIN: Final = 15.0
"""Our backstop beyond a backend's own teardown deadline (which kills its scripts)."""
WORKSPACE_REMOVAL_MARGIN: Final = 60.0
"""The direct backend's extra teardown time for removing a (possibly large) workspace."""
FORCED_WAIT: Final = 5.0
"""After killing every task, how long to wait for them to unwind."""
FLUSH_TIMEOUT: Final = 10.0
"""How long a graceful stop waits for the server to take the last messages."""
FORCED_FLUSH: Final = 1.0
"""After a forced stop, how long the last messages may take to go out."""
CLOSE_WAIT: Final = 5.0
"""How long closing the connection may take as a whole."""
CLOSE_TIMEOUT: Final = 5.0
"""How long the WebSocket close handshake (and a dial's disconnect) may take."""
BACKEND_CLOSE_TIMEOUT: Final = 60.0
"""The bound on a backend's ``aclose`` at the end of its ``async with``."""
