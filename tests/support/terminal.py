"""A real terminal for tests: a command in a detached ``tmux`` session of a given size."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

import attrs


@attrs.frozen
class Screen:
    """What the terminal showed (scrollback included, wrapped lines joined) and the exit code."""

    text: str
    exit_code: int

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()


def run_in_terminal(
    argv: list[str], *, width: int, height: int, env: Mapping[str, str], cwd: Path
) -> Screen:
    """Run ``argv`` in a ``width`` x ``height`` tmux terminal until it exits.

    The screen keeps its escape codes (``capture-pane -e``), so colour can be asserted.
    Each call has its own tmux server (socket), stopped before returning.
    """
    tmux = ["tmux", "-L", f"ozw-test-{os.getpid()}-{secrets.token_hex(4)}", "-f", "/dev/null"]
    done = "command-done"
    # The shell reports the exit code on screen, then tells the test the screen is final.
    script = (
        f'cd {shlex.quote(str(cwd))}; {shlex.join(argv)}; echo "exit code $?"; '
        f"{shlex.join(tmux)} wait-for -S {done}; sleep 600"
    )
    session = [*tmux, "new-session", "-d", "-x", str(width), "-y", str(height), "-s", "t"]
    subprocess.run([*session, "sh", "-c", script], env=dict(env), check=True)
    try:
        subprocess.run([*tmux, "wait-for", done], check=True, timeout=180)
        captured = subprocess.run(
            [*tmux, "capture-pane", "-p", "-e", "-J", "-S", "-", "-E", "-", "-t", "t"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, capture_output=True)
    text = captured.rstrip("\n")
    last = [line for line in text.splitlines() if line.startswith("exit code ")][-1]
    return Screen(text, int(last.removeprefix("exit code ")))
