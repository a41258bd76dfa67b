"""Downtime of odbox-deploy on a real Odoo 17 (tests/box's harness): a one-module update and a
rollback, on the box's dataset (tests/box/data.make_shop: partners with images, attachments
10 B to 12 MB, messages) plus the tests' own addon. Prints a table.

    ODBOX_ODOO_RUNTIME=/var/tmp/odbox-odoo-bench python bench/deploy_downtime.py [--runs 3]

Downtime: from the moment Odoo's stop began (odooctl writes it) to the first /odbox/health
that passes after it, polled every 0.1 s by a thread during the whole `apply`. Also: the whole
`apply`, and an `apply` with nothing to do.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.box import data
from tests.box.harness import (
    Box,
    odoo_source,
    peer_postgres,
    prepare_odoo,
    temp_base,
    why_not,
)
from tests.box.helpers import wait_serving
from tests.deploy.helpers import DEMO, Deploy, install_command, install_version


class HealthWatch:
    """Polls /odbox/health; the first time it passes after `since`."""

    def __init__(self, box: Box) -> None:
        self.box = box
        self.passes: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stop.is_set():
            at = time.time()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.box.http_port, timeout=2)
                conn.request("GET", "/odbox/health")
                response = conn.getresponse()
                if response.status == 200 and json.loads(response.read())["status"] == "pass":
                    self.passes.append(at)
                conn.close()
            except (OSError, ValueError, http.client.HTTPException):
                pass
            time.sleep(0.1)

    def first_pass_after(self, since: float) -> float:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            later = [t for t in self.passes if t > since]
            if later:
                return later[0]
            time.sleep(0.1)
        raise AssertionError("Odoo did not pass its health check after the deploy")

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def one(deploy: Deploy, watch: HealthWatch, version: int, rollback_to: int) -> tuple[float, float]:
    box = deploy.box
    install_version(box, version)
    began = time.monotonic()
    result = deploy.run("apply", ODBOX_DEPLOY_ROLLBACK=install_command(box, rollback_to))
    total = time.monotonic() - began
    expected = 0 if version != 3 else 1
    assert result.returncode == expected, result.stdout + result.stderr
    stopped = float((box.base / "stopped-at").read_text())
    return watch.first_pass_after(stopped) - stopped, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if reason := why_not():
        print(f"error: {reason}", file=sys.stderr)
        return 1
    source = odoo_source()
    assert source is not None
    install = prepare_odoo(source)
    with peer_postgres() as pg, temp_base() as base, tempfile.TemporaryDirectory() as scratch:
        box = Box.make(pg, install, base)
        box.setup()
        first = box.initialize()
        assert first.returncode == 0, first.stderr
        install_version(box, 1)
        done = box.as_odoo([str(base / "bin" / "odoo"), "--config", str(base / "etc" /
                           "odoo.conf"), "-i", DEMO, "--stop-after-init", "--no-http"],
                           timeout=1800)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        box.start()
        made = data.make_shop(box)
        deploy = Deploy(box, Path(scratch))
        deploy.ok("apply")  # the first deploy records
        watch = HealthWatch(box)
        rows: dict[str, list[float]] = {"update": [], "update apply": [], "rollback": [],
                                        "rollback apply": [], "nothing to do": []}  # fmt: skip
        try:
            version = 1
            for _ in range(args.runs):
                version = 2 if version == 1 else 1  # each run updates the one module
                down, total = one(deploy, watch, version, rollback_to=3 - version)
                rows["update"].append(down)
                rows["update apply"].append(total)
                began = time.monotonic()
                deploy.ok("apply")
                rows["nothing to do"].append(time.monotonic() - began)
            for _ in range(args.runs):
                down, total = one(deploy, watch, 3, rollback_to=version)
                rows["rollback"].append(down)
                rows["rollback apply"].append(total)
                wait_serving(box)
        finally:
            watch.close()
            box.stop()
    print(f"\nodbox-deploy on Odoo {install.version}, base+mail+contacts+{DEMO}, "
          f"{len(made)} attachments of the box dataset; {args.runs} runs each\n")  # fmt: skip
    print("| what | median | min | max |")
    print("|---|---|---|---|")
    labels = {
        "update": "downtime, one-module update (stop → health passes)",
        "update apply": "`apply`, one-module update, whole",
        "rollback": "downtime, failed update rolled back (stop → health passes)",
        "rollback apply": "`apply`, failed update rolled back, whole",
        "nothing to do": "`apply`, nothing to do",
    }
    for key, label in labels.items():
        values = rows[key]
        print(f"| {label} | {statistics.median(values):.1f} s | {min(values):.1f} s | "
              f"{max(values):.1f} s |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
