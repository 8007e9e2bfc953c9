"""Whether ``execve`` would start a command: the error it would give, found beforehand.

A child started through a wrapper (:mod:`~ozw.backends.execution.spawn`) reaches the
command's ``execve`` only after ``subprocess`` has returned, so a command that cannot
start would look like one that exited 126 or 127. Checking first keeps "could not
start" a start error (an ``OSError``, as ``subprocess`` raises it) for the usual
causes: no such file on the child's ``PATH``, not executable, a directory, a missing
``#!`` interpreter. What changes between this check and the ``execve`` shows as the
exit status and the shell's message on stderr.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping

SHEBANG_LENGTH = 256
"""The kernel reads no more of a ``#!`` line than this."""


def check_executable(
    name: str, *, env: Mapping[str, str], cwd: str | os.PathLike[str] | None = None
) -> None:
    """Raise the OSError starting ``name`` would raise: looked up on ``env``'s PATH
    when it has no slash (as ``execvpe``), else relative to ``cwd``."""
    if "/" in name:
        candidates = [os.path.join(cwd, name) if cwd is not None else name]
    else:
        candidates = [os.path.join(folder, name) for folder in os.get_exec_path(dict(env))]
    problems = []
    for path in candidates:
        problem = exec_problem(path)
        if problem is None:
            return
        problems.append(problem)
    # Like execvpe: a match that was denied is reported over the places that had none.
    code = errno.EACCES if errno.EACCES in problems else problems[-1] if problems else errno.ENOENT
    raise OSError(code, os.strerror(code), name)


def exec_problem(path: str) -> int | None:
    """The errno ``execve(path)`` would fail with, or None when it would start."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return errno.ENOENT if exc.errno in (errno.ENOTDIR, None) else exc.errno
    if not stat.S_ISREG(mode) or not os.access(path, os.X_OK):
        return errno.EACCES
    interpreter = shebang_interpreter(path)
    if interpreter is not None and not os.access(interpreter, os.X_OK):
        return errno.ENOENT
    return None


def shebang_interpreter(path: str | os.PathLike[str]) -> str | None:
    """The interpreter a ``#!`` script names; None for a binary, or when unreadable."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(SHEBANG_LENGTH)
    except OSError:
        return None  # execute-only: nothing to check, execve will tell
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return os.fsdecode(words[0]) if words else None
