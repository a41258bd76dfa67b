"""One repository shared by two databases: prune keeps each one's history, `latest` is the
latest of the database asked for (restic's `--group-by host,paths`, here host and db)."""

from __future__ import annotations

import json
import re

from tests.backup.helpers import backup_ok, backup_run, make_odoo
from tests.odoo_data import Shape


def test_prune_and_latest_keep_to_each_database(odoo, postgres, local_env, tmp_path):
    env = local_env
    name, _, filestore = odoo
    other_filestore = tmp_path / "other" / "filestore"
    other = f"{name}_other"
    make_odoo(postgres, other, other_filestore, Shape.small(), seed=9)
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    ids = []
    for db, folder in ((name, filestore), (name, filestore), (other, other_filestore)):
        out = backup_run(env, repo, (db, "", folder))
        ids.append(re.search(r"snapshot (\S+):", out)[1])
    mine, theirs = ids[1], ids[2]

    pruned = json.loads(backup_ok(env, "prune", "--repo", repo, "--keep-last", "1",
                                  "--dry-run", "--json"))  # fmt: skip
    assert pruned["group_by"] == ["host", "db"]
    assert sorted(s["id"] for s in pruned["snapshots"] if s["keep"]) == [mine, theirs]
    one_group = json.loads(backup_ok(env, "prune", "--repo", repo, "--keep-last", "1",
                                     "--group-by", "", "--dry-run", "--json"))  # fmt: skip
    assert [s["id"] for s in one_group["snapshots"] if s["keep"]] == [theirs]

    out = backup_ok(env, "restore", "--repo", repo, "latest", "--db", name, "--filestore",
                    str(filestore), "--odoo-stop", "true", "--odoo-start", "true")  # fmt: skip
    assert f"restored snapshot {mine} " in out  # not the other database's, though newer
