"""The environment that puts sitecustomize.py (kill points, call counts) into a child."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).parent


def with_killpoints(
    env: dict[str, str],
    *,
    kill_at: str | None = None,
    pause_at: dict[str, Path] | None = None,
    count_to: Path | None = None,
) -> dict[str, str]:
    """`env` for an odbox-backup child that dies at `kill_at` (`OP:WHAT:N:before|after`,
    sitecustomize.py), pauses at each step of `pause_at` until its file exists, or writes
    how many calls of each step it made to `count_to`."""
    paths = [str(FOLDER), *filter(None, [env.get("PYTHONPATH")])]
    out = {**env, "PYTHONPATH": os.pathsep.join(paths)}
    if kill_at:
        out["ODBOX_TEST_KILL_AT"] = kill_at
    if pause_at:
        out["ODBOX_TEST_PAUSE_AT"] = ",".join(f"{k}:{v}" for k, v in pause_at.items())
    if count_to:
        out["ODBOX_TEST_COUNT_TO"] = str(count_to)
    return out


def counted(path: Path) -> dict[str, int]:
    """What a child run with `count_to=path` counted: step -> calls."""
    return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}


def wait_for_pause(release: Path, child: subprocess.Popen[Any], deadline: float = 120) -> None:
    """Until the child paused at the step whose release file is `release`."""
    end = time.monotonic() + deadline
    while not Path(f"{release}.paused").exists():
        assert child.poll() is None, f"it ended (status {child.returncode}) before the pause"
        assert time.monotonic() < end, f"no pause at {release.name} within {deadline} s"
        time.sleep(0.01)
