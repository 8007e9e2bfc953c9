"""The one thread that starts every child process.

Starting a child suspends the starting thread until the child reaches ``execve``
(``vfork``): ~0.5 ms on a quiet machine, several ms on a loaded one, when the child
waits for a CPU. On the event loop's thread that wait would delay every other task
(issue 14); here this thread waits, with the GIL released, and the loop runs on. The
thread lives as long as the process, as the parent-death signal needs: it fires when
the thread that started the child exits (:mod:`~ozw.backends.execution.spawn`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


class Starter:
    """Runs start-up calls on its own thread, created at the first call."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._creating = threading.Lock()

    async def call(self, start: Callable[[], T]) -> T:
        """``start()`` on the starter thread: its result, or what it raised. Not
        cancellable: a started child must reach the task that will stop it."""
        done_read, done_write = os.pipe()
        outcome: list[T] = []
        failure: list[BaseException] = []

        def job() -> None:
            try:
                outcome.append(start())
            except BaseException as exc:  # re-raised in the caller's task
                failure.append(exc)
            finally:
                # The write end is the job's own: never a closed (or reused) number.
                with contextlib.suppress(OSError):
                    os.write(done_write, b"\0")
                os.close(done_write)

        try:
            self._thread_running()
            self._jobs.put(job)
        except BaseException:
            os.close(done_write)
            os.close(done_read)
            raise
        try:
            with anyio.CancelScope(shield=True):
                await anyio.wait_readable(done_read)
        finally:
            os.close(done_read)
        if failure:
            raise failure[0]
        return outcome[0]

    def _thread_running(self) -> None:
        with self._creating:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="ozw-starter", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            self._jobs.get()()


STARTER = Starter()
"""The process's one starter: every child's parent thread."""
