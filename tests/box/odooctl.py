"""`systemctl start|stop odoo` for the harness's box: what odbox-backup's --odoo-stop and
--odoo-start run, and what the harness runs itself.

    python -m tests.box.odooctl start|stop BASE

start: ExecStartPre (odoo-configure, odoo-initialize) then ExecStart, as the odoo user, in
its own session, the pid in BASE/odoo.pid; it returns once Odoo is spawned, as systemd does for
a simple unit. stop: SIGTERM to Odoo's process group, up to 90 s (TimeoutStopSec), then SIGKILL;
it returns once every process is gone, and writes when it began to BASE/stopped-at (for the
downtime of a restore). BASE/unit.json (written by the harness) holds the commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from odbox_common.processes import running

STOP_TIMEOUT = 90


def _pid(base: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((base / "odoo.pid").read_text())
    return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Every member might be a zombie waiting for init: count only those that run.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                    return True
    return False


def start(base: Path) -> None:
    unit = json.loads((base / "unit.json").read_text())
    as_odoo = {"user": unit["uid"], "group": unit["gid"], "extra_groups": [],
               "cwd": unit["home"], "env": unit["env"]}  # fmt: skip
    for script in unit["pre"]:
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, **as_odoo)
        if result.returncode != 0:
            sys.exit(f"odoo: ExecStartPre failed: {result.stderr.strip()}")
    with open(base / "odoo.log", "ab") as log:
        process = subprocess.Popen(
            unit["start"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, **as_odoo,
        )  # fmt: skip
    (base / "odoo.pid").write_text(str(process.pid))


def stop(base: Path) -> None:
    (base / "stopped-at").write_text(repr(time.time()))
    pid = _pid(base)
    if pid is None or not running(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while _group_alive(pid):
        time.sleep(0.1)
    (base / "odoo.pid").unlink()


def main() -> None:
    action, base = sys.argv[1], Path(sys.argv[2])
    {"start": start, "stop": stop}[action](base)


if __name__ == "__main__":
    main()
