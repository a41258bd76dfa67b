"""The box's life with data Odoo made: a hot backup while a client keeps committing, a restore
with Odoo stopped and started around the swap, Odoo serving what was restored, a cold backup;
dbinit finds nothing to say or do after a restore."""

from __future__ import annotations

import pytest

from tests.box import data
from tests.box.helpers import assert_dbinit_content, latest_id, new_repo, ok, wait_serving

pytestmark = pytest.mark.odoo


def test_hot_backup_under_writes_restore_and_cold_backup_serve_every_attachment(box, tmp_path):
    box.start(workers=2)
    made = data.make_shop(box)
    assert data.served(box, data.PREFIX) == made
    repo, key = new_repo(box, tmp_path)

    writer = data.Writer(box)
    writer.start()
    before = writer.wait_for(3)
    ok(box.odbox_backup(repo, "run", "--hot"))
    writer.wait_for(len(writer.committed) + 3)  # it went on committing during and after
    committed = writer.stop()
    box.rpc("res.partner", "create", {"name": f"{data.PREFIX}after the backup"})
    snapshot = latest_id(box, repo)

    since = box.log_size()
    ok(box.odbox_backup(repo, "restore", snapshot, identity=key))
    serving = wait_serving(box)
    stopped = float((box.base / "stopped-at").read_text())
    print(f"\nrestore downtime (Odoo stopped -> serving again): {serving - stopped:.1f} s")
    box.wait_ready()

    assert data.served(box, data.PREFIX) == made
    restored = data.served(box, data.WRITER)
    names = sorted(restored)
    assert len(names) >= before
    assert [(n, restored[n]) for n in names] == committed[: len(names)], "not a prefix"
    assert (
        box.rpc("res.partner", "search_count", [["name", "=", f"{data.PREFIX}after the backup"]])
        == 0
    )
    upload = box.rpc(
        "ir.attachment", "create", {"name": "after-restore", "datas": data.b64(b"new")}
    )
    assert box.rpc("ir.attachment", "read", [upload], ["checksum"])[0]["checksum"] == data.sha1(
        b"new"
    )
    assert box.log_errors(since) == []
    assert_dbinit_content(box)

    ok(box.odbox_backup(repo, "run", "--cold"))
    wait_serving(box)
    box.wait_ready()
    assert data.served(box, "after-restore") == {"after-restore": data.sha1(b"new")}
    assert box.log_errors(since) == []


def test_odoo_bin_neutralize_works_on_a_restored_copy(box, tmp_path):
    """The safe-deploy path: a restored database neutralized by Odoo's own command."""
    repo, key = new_repo(box, tmp_path)
    ok(box.odbox_backup(repo, "run", "--cold"))
    ok(box.odbox_backup(repo, "restore", "latest", identity=key))
    box.stop()
    odoo = box.unit(0)["start"].split()[0]  # the box's bin/odoo
    result = box.as_odoo([odoo, "neutralize", "-c", str(box.run_dir / "odoo.conf"), "-d", "odoo"],
                         timeout=1800)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert box.sql("SELECT value FROM ir_config_parameter WHERE key = 'database.is_neutralized'",
                   "odoo") == [("true",)]  # fmt: skip
    box.start(workers=0)
    wait_serving(box)
