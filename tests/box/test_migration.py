"""The migration path and restore's safety on a real Odoo: a new box in bootstrap mode restored
as root, a dump that grants to a role the box lacks, a kept copy with an open session."""

from __future__ import annotations

import psycopg
import pytest

from tests.box import data
from tests.box.harness import DB
from tests.box.helpers import (
    assert_dbinit_content,
    become_a_new_box_in_bootstrap_mode,
    new_repo,
    ok,
    switch_to_the_full_configuration,
    wait_serving,
)

pytestmark = pytest.mark.odoo


def test_a_new_box_in_bootstrap_mode_restored_as_root_serves_every_attachment(box, tmp_path):
    box.start(workers=0)
    made = data.make_shop(box)
    repo, key = new_repo(box, tmp_path)
    ok(box.odbox_backup(repo, "run", "--hot"))
    become_a_new_box_in_bootstrap_mode(box)

    ok(box.odbox_backup(repo, "restore", "latest", identity=key, odoo_service=False))
    owner = box.filestore.stat()
    assert (owner.st_uid, owner.st_gid) == (box.user.pw_uid, box.user.pw_gid)
    since = box.log_size()
    switch_to_the_full_configuration(box)

    assert data.served(box, data.PREFIX) == made  # read as 0 bytes when root kept them
    upload = box.rpc("ir.attachment", "create", {"name": "new", "datas": data.b64(b"upload")})
    assert box.rpc("ir.attachment", "read", [upload], ["file_size"])[0]["file_size"] == 6
    assert box.log_errors(since) == []
    assert_dbinit_content(box)


def test_a_snapshot_granting_to_a_role_the_box_lacks_restores_and_serves(box, tmp_path):
    box.start(workers=0)
    made = data.make_shop(box)
    box.sql("CREATE ROLE bi_reader")
    box.sql("GRANT SELECT ON res_partner TO bi_reader", DB)
    repo, key = new_repo(box, tmp_path)
    ok(box.odbox_backup(repo, "run", "--hot"))
    box.sql("REVOKE SELECT ON res_partner FROM bi_reader", DB)
    box.sql("DROP ROLE bi_reader")  # the new box never had it

    ok(box.odbox_backup(repo, "restore", "latest", identity=key))
    wait_serving(box)
    box.wait_ready()
    assert data.served(box, data.PREFIX) == made
    assert_dbinit_content(box)


def test_drop_previous_drops_a_kept_copy_that_a_session_holds(box, tmp_path):
    repo, key = new_repo(box, tmp_path)
    ok(box.odbox_backup(repo, "run", "--cold"))
    ok(box.odbox_backup(repo, "restore", "latest", identity=key))
    [(kept,)] = box.sql("SELECT datname FROM pg_database WHERE datname LIKE %s", "postgres",
                        f"{DB}_before_%")  # fmt: skip
    with psycopg.connect(host=str(box.cluster.socket_dir), user="postgres", dbname=kept):
        out = ok(box.odbox_backup(repo, "drop-previous"))
    assert f"dropped database {kept} (ended its sessions:" in out, out
    assert box.sql("SELECT count(*) FROM pg_database WHERE datname = %s", "postgres", kept) == [
        (0,)
    ]
    wait_serving(box)
