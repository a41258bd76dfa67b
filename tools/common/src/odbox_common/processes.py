"""Processes: whether one on this host still runs (what a lock or a lease that names its
owner by pid asks before it calls the owner dead), and running a configured command (the
box's stop/start of Odoo) with one line when it fails."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from collections.abc import Sequence

from odbox_common.errors import ToolError


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """The process's state letter and start time (clock ticks since boot), from /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    return None


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot; None without /proc): with the pid, it names
    one process, even after the pid is used again."""
    state = _proc_stat(pid)
    return state[1] if state else None


def running(pid: int, start: int | None = None) -> bool:
    """`pid` runs here (a zombie, killed but not yet reaped, does not), and, when `start` is
    given, it is the process that started then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it runs
    state = _proc_stat(pid)
    if state is None:
        return True  # no /proc: the pid runs, that is all we know
    if state[0] in ("Z", "X"):
        return False
    return start is None or state[1] == start


def run_command(command: Sequence[str], what: str, timeout: float,
                error: type[ToolError] = ToolError) -> str:  # fmt: skip
    """Run a configured command (stdin closed, output captured); its stdout, or `error`
    naming the command, `what` it was to do and its last line of output."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        raise error(f"cannot {what} with `{shlex.join(command)}`: {e}") from e
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise error(f"`{shlex.join(command)}` failed to {what} (exit status "
                    f"{done.returncode})" + (f": {last[-1]}" if last else ""))  # fmt: skip
    return str(done.stdout)
