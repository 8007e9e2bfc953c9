"""A child the machine would not start: which limit refused it, in words.

At hundreds of running tasks the first limit reached is usually the worker's own
open-file limit (each running child holds a few pipe and pidfd descriptors), then
the processes a user may run. The stock text ("Too many open files") does not say
which limit or what to do; this does, so the task's failure and the worker's log
name it.
"""

from __future__ import annotations

import errno
import resource


def _soft(limit: int) -> str:
    soft, _ = resource.getrlimit(limit)
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def start_refused(exc: OSError) -> OSError:
    """``exc`` (from starting a child) reworded when a machine limit refused the start;
    ``exc`` itself otherwise. The errno is kept."""
    match exc.errno:
        case errno.EMFILE:
            files = _soft(resource.RLIMIT_NOFILE)
            why = f"the worker's open-file limit is reached (RLIMIT_NOFILE {files}, `ulimit -n`)"
        case errno.ENFILE:
            why = "the system's open-file table is full (fs.file-max)"
        case errno.EAGAIN:
            why = (
                f"the process limit is reached (RLIMIT_NPROC {_soft(resource.RLIMIT_NPROC)} "
                "per user, `ulimit -u`; or kernel.pid_max / kernel.threads-max)"
            )
        case errno.ENOMEM:
            why = "not enough memory to start a process"
        case _:
            return exc
    text = f"{why}: lower max_concurrent_tasks or raise the limit"
    return OSError(exc.errno, text)
