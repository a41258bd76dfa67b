"""Steps the box tests share: a backup repository, waiting for Odoo, dbinit's verdict."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from tests.box import data
from tests.box.harness import DB, Box


def new_repo(box: Box, tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / "backup-key.txt"
    subprocess.run(["age-keygen", "-o", key], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", key], check=True, capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
    repo = tmp_path / "repo"
    ok(box.odbox_backup(repo, "init", "--recipient", recipient))
    return repo, key


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def latest_id(box: Box, repo: Path) -> str:
    return str(json.loads(ok(box.odbox_backup(repo, "list", "--json")))[-1]["id"])


def wait_serving(box: Box, deadline: float = 600) -> float:
    """Until /odbox/health passes (Odoo started by a restore or a cold backup); when it did."""
    until = time.monotonic() + deadline
    while True:
        try:
            health = box.get("/odbox/health", timeout=30)
            if health.status == 200 and health.json()["status"] == "pass":
                return time.time()
        except OSError:
            pass
        assert time.monotonic() < until, f"Odoo does not serve:\n{box.tail()}"
        time.sleep(0.05)


def assert_dbinit_content(box: Box) -> None:
    check = box.check()
    assert check.returncode == 0, check.stdout
    assert "no drift" in check.stdout
    setup = box.dbinit("setup", "--no-pgadmin")
    assert setup.returncode == 0, setup.stderr
    [line] = setup.stdout.splitlines()  # nothing changed: one line that says so
    assert line.endswith("roles, databases and grants are as they should be"), line


def what_odoo_serves(box: Box) -> dict[str, object]:
    partners = box.rpc("res.partner", "search_read", [["name", "=like", f"{data.PREFIX}%"]],
                       fields=["name", "email", "image_128"], order="name")  # fmt: skip
    messages = box.rpc("mail.message", "search_read", [["model", "=", "res.partner"],
                       ["message_type", "=", "comment"]], fields=["body", "attachment_ids"],
                       order="id")  # fmt: skip
    return {
        "partners": [(p["name"], p["email"], bool(p["image_128"])) for p in partners],
        "messages": [(m["body"], len(m["attachment_ids"])) for m in messages],
        "attachments": data.served(box, data.PREFIX),
    }


def become_a_new_box_in_bootstrap_mode(box: Box) -> None:
    """Odoo stopped for good, dbinit's empty database, no filestore folder for it yet."""
    box.stop()
    box.sql(f"DROP DATABASE {DB} WITH (FORCE)")
    shutil.rmtree(box.filestore)
    box.setup()
    assert box.sql("SELECT to_regclass('public.ir_module_module')", DB) == [(None,)]


def switch_to_the_full_configuration(box: Box) -> None:
    since = box.log_size()
    box.start(workers=2)  # odoo-initialize finds the restored database and leaves it alone
    wait_serving(box)
    assert "is empty: installing" not in box.log.read_text()[since:]
