"""Every command that reads or writes a repository takes `--auth-key-file FILE`, as well as
ODBOX_BACKUP_AUTH_KEY_FILE: export, import and restore ignored the option (they had none)
and needed the environment variable, so an admin restoring on a laptop with the key from
the vault could not name it."""

from __future__ import annotations

import json

from odbox_backup.repository import AuthKey
from tests.backup.helpers import backup, backup_ok, odoo_state
from tests.helpers import one_error_line


def test_export_import_and_restore_take_the_key_by_option(postgres, odoo, local_env, tmp_path):
    name, dsn, filestore = odoo
    key = tmp_path / "vault" / "backup-auth.key"
    key.parent.mkdir()
    key.write_text(AuthKey.generate(str(key)).text())
    env = {k: v for k, v in local_env.items() if k != "ODBOX_BACKUP_AUTH_KEY_FILE"}
    with_key = ["--auth-key-file", str(key)]
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo, *with_key)
    backup_ok(env, "run", "--repo", repo, "--db", name, "--filestore", str(filestore), *with_key)
    [snapshot] = [row["id"] for row in json.loads(backup_ok(env, "list", "--repo", repo, "--json",
                                                            *with_key))]  # fmt: skip
    before = odoo_state(dsn, filestore)
    zipped = tmp_path / "odoo.zip"

    # Without the key, each says what it needs; with it, each works.
    commands = {
        "export": ["export", "--repo", repo, "latest", "--odoo-zip", str(zipped)],
        "import": ["import", "--repo", repo, str(zipped), "--db-name", f"{name}_imported"],
        "restore": ["restore", "--repo", repo, snapshot, "--db", f"{name}_restored",
                    "--filestore", str(tmp_path / "restored" / "filestore")],
    }  # fmt: skip
    for command, args in commands.items():
        refused = backup(env, *args)
        assert refused.returncode == 2, refused.stderr
        assert "--auth-key-file" in one_error_line(refused), command
        backup_ok(env, *args, *with_key)
    restored_dsn = dsn.replace(f"dbname={name}", f"dbname={name}_restored")
    assert odoo_state(restored_dsn, tmp_path / "restored" / "filestore") == before
