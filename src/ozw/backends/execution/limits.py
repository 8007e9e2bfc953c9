"""Time limits of a backend's calls: one style for every backend.

- :func:`bounded`: a step of a task that must not hang (a docker call, a Kubernetes
  request); past its bound the task fails with the reason of the phase.
- :func:`cleanup_bound`: clean-up that must run even when the surrounding scope is
  cancelled, but not for ever (shielded, gives up silently at its bound).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio

from ozw.config import format_duration
from ozw.tasks.failures import FailureReason, TaskFailure


@contextlib.contextmanager
def bounded(seconds: float, reason: FailureReason, what: str, *, hint: str = "") -> Iterator[None]:
    """Bound the calls inside by ``seconds``; a timeout fails the task with ``reason``.

    The failure's cause reads ``<what> did not finish within <seconds>s[ (<hint>)]``:
    ``what`` says what was running ("inspecting image x: the docker CLI"), ``hint``
    the likely culprit ("is the Docker daemon hung?").
    """
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError:
        suffix = f" ({hint})" if hint else ""
        raise TaskFailure(
            reason, f"{what} did not finish within {format_duration(seconds)}{suffix}"
        ) from None


def cleanup_bound(seconds: float) -> anyio.CancelScope:
    """A shielded scope that gives up after ``seconds``: clean-up runs even when the
    caller is cancelled (an ``await`` in ``finally`` would otherwise be cancelled at
    once), but a hung call cannot hold the task for ever. Check ``cancelled_caught``."""
    return anyio.move_on_after(seconds, shield=True)
