"""Odoo's backup zips both ways: odbox-backup's export restored by Odoo's own restore_db, and a
zip from Odoo's own dump_db (granting to a role the box lacks) imported, restored and served."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.box import data
from tests.box.harness import DB, Box
from tests.box.helpers import assert_dbinit_content, new_repo, ok, wait_serving, what_odoo_serves

pytestmark = pytest.mark.odoo

# Odoo's database manager, as an admin enables it to move a database (list_db).
MANAGER = "odoo.tools.config['list_db'] = True\n"
RESTORE_DB = MANAGER + "odoo.service.db.restore_db(sys.argv[1], sys.argv[2], copy=True)\n"
DUMP_DB = (
    MANAGER
    + """
with open(sys.argv[2], 'wb') as stream:
    odoo.service.db.dump_db(sys.argv[1], stream, 'zip')
"""
)


def odoo_owned_folder(box: Box, name: str) -> Path:
    folder = box.base / name
    shutil.rmtree(folder, ignore_errors=True)  # the session's box keeps its folders
    folder.mkdir()
    box.own(folder, 0o700)
    return folder


def test_an_exported_zip_is_restored_by_odoos_own_restore_db_and_served(box, tmp_path):
    box.start(workers=0)
    data.make_shop(box)
    before = what_odoo_serves(box)
    repo, key = new_repo(box, tmp_path)
    ok(box.odbox_backup(repo, "run", "--hot"))
    zip_path = odoo_owned_folder(box, "zips") / "export.zip"
    ok(box.odbox_backup(repo, "export", "latest", "--odoo-zip", str(zip_path), identity=key))
    shutil.chown(zip_path, box.user.pw_uid, box.user.pw_gid)

    box.stop()  # the box again with nothing but what Odoo's own restore makes of the zip
    box.sql(f"DROP DATABASE {DB} WITH (FORCE)")
    shutil.rmtree(box.filestore)
    box.sql("ALTER ROLE odoo CREATEDB")  # what Odoo's database manager needs
    restored = box.odoo_python(RESTORE_DB, DB, str(zip_path))
    box.sql("ALTER ROLE odoo NOCREATEDB")
    assert restored.returncode == 0, restored.stderr[-3000:]
    box.setup()
    box.start(workers=2)
    wait_serving(box)
    assert what_odoo_serves(box) == before
    assert_dbinit_content(box)


def test_a_zip_from_odoos_own_dump_db_granting_to_a_foreign_role_is_imported_and_served(
    box, tmp_path
):
    box.start(workers=0)
    data.make_shop(box)
    before = what_odoo_serves(box)
    box.sql("CREATE ROLE bi_reader")
    box.sql("GRANT SELECT ON res_partner TO bi_reader", DB)
    zip_path = odoo_owned_folder(box, "zips") / "odoo-dump.zip"
    dumped = box.odoo_python(DUMP_DB, DB, str(zip_path))
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    box.sql("REVOKE SELECT ON res_partner FROM bi_reader", DB)
    box.sql("DROP ROLE bi_reader")  # the box it goes to never had it
    box.rpc("res.partner", "create", {"name": f"{data.PREFIX}not in the zip"})

    repo, key = new_repo(box, tmp_path)
    ok(box.odbox_backup(repo, "import", str(zip_path), "--db-name", DB, identity=key))
    ok(box.odbox_backup(repo, "restore", "latest", identity=key))
    wait_serving(box)
    box.wait_ready()
    assert what_odoo_serves(box) == before
    assert_dbinit_content(box)
