"""`just demo` with a real Odoo: the box's first start, Odoo on 127.0.0.1, a backup, a change
made through Odoo, a restore, and Odoo serving the restored data (the harness of tests/box).

    python -m tests.box.demo --check   # exit 0 when a real Odoo can run here, else says why
    python -m tests.box.demo [--keep]  # the demo; --keep leaves Odoo running until Enter
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tests.box import data
from tests.box.harness import (
    DB,
    Box,
    odoo_source,
    peer_postgres,
    prepare_odoo,
    temp_base,
    why_not,
)
from tests.box.helpers import latest_id, new_repo, ok, wait_serving

HOW_TO_GET_ODOO = "tests/box/README.md says how to get one for the demo with a real Odoo"


def say(text: str) -> None:
    print(f"== {text}", flush=True)


def partners(box: Box) -> list[str]:
    found = box.rpc("res.partner", "search_read", [["name", "=like", f"{data.PREFIX}%"]],
                    fields=["name"], order="name")  # fmt: skip
    return [p["name"] for p in found]


def demo(keep: bool) -> None:
    source = odoo_source()
    assert source is not None
    say(f"Odoo from {source}: its venv and a copy it can read (built once, then reused)")
    install = prepare_odoo(source)
    with peer_postgres() as pg, temp_base() as base:
        box = Box.make(pg, install, base)
        say("PostgreSQL on a Unix socket with the box's peer auth; dbinit setup")
        print(box.setup(), end="")
        say("the box's first start: odoo-initialize installs base, odbox_health, mail, contacts")
        first = box.initialize()
        assert first.returncode == 0, first.stdout + first.stderr
        box.start(workers=2)
        say(f"Odoo {install.version} serves http://127.0.0.1:{box.http_port}/web/login "
            "(admin / admin)")  # fmt: skip
        health = box.get("/odbox/health")
        print(f"GET /odbox/health: {health.status} {json.dumps(health.json())}")
        say("data made through Odoo: partners with images, attachments 10 B to 12 MB, messages")
        made = data.make_shop(box)
        print(f"{len(partners(box))} partners, {len(made)} attachments")
        with tempfile.TemporaryDirectory(prefix="odbox-demo-") as scratch:
            say("odbox-backup: an encrypted repository and a hot backup (Odoo keeps running)")
            repo, key = new_repo(box, Path(scratch))
            ok(box.odbox_backup(repo, "run", "--hot"))
            snapshot = latest_id(box, repo)
            print(f"snapshot {snapshot}")
            say("changed through Odoo: a partner renamed, one added, an attachment deleted")
            [first_partner] = box.rpc("res.partner", "search",
                                      [["name", "=", f"{data.PREFIX}partner 0"]])  # fmt: skip
            box.rpc("res.partner", "write", [first_partner], {"name": f"{data.PREFIX}renamed"})
            box.rpc("res.partner", "create", {"name": f"{data.PREFIX}new after the backup"})
            doomed = box.rpc("ir.attachment", "search", [["name", "=", f"{data.PREFIX}file-1000"]])
            box.rpc("ir.attachment", "unlink", doomed)
            print("partners now:", ", ".join(partners(box)))
            say(f"restore {snapshot}: Odoo stopped, database and filestore swapped, started")
            print(ok(box.odbox_backup(repo, "restore", snapshot, identity=key)), end="")
            wait_serving(box)
            box.wait_ready()
        say("Odoo serves the restored data")
        print("partners:", ", ".join(partners(box)))
        served = data.served(box, data.PREFIX)
        same = served == made
        print(f"{len(served)} attachments, every checksum as before the change: {same}")
        assert same
        print(f"GET /odbox/health: {box.get('/odbox/health').json()['status']}")
        say("dbinit check on the restored database")
        check = box.check()
        print(check.stdout, end="")
        assert check.returncode == 0
        if keep:
            input(f"Odoo runs on http://127.0.0.1:{box.http_port} (database {DB}); "
                  "press Enter to stop it and remove everything ")  # fmt: skip
        box.stop()


def main() -> int:
    reason = why_not()
    if "--check" in sys.argv[1:]:
        if reason:
            print(f"no real Odoo here: {reason}; {HOW_TO_GET_ODOO}")
        return 0 if reason is None else 1
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    try:
        demo(keep="--keep" in sys.argv[1:])
    except AssertionError as e:
        print(f"error: the demo failed: {str(e).strip().splitlines()[0] if str(e) else e!r}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
