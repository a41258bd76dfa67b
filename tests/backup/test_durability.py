"""Objects are flushed with one syncfs before the manifest, not fsynced one by one; an object
newer than every manifest (left by a run that died, possibly empty after a power cut) is
written again when needed, never trusted."""

from __future__ import annotations

import hashlib
import random

import psycopg

from tests.backup.helpers import backup, backup_ok, show
from tests.odoo_data import add_attachments


def test_an_object_a_dead_run_left_is_written_again(odoo, env, tmp_path):
    name, dsn, filestore = odoo
    repo = tmp_path / "repo"
    run = ["run", "--repo", str(repo), "--db", name, "--filestore", str(filestore), "--no-cache"]
    backup_ok(env, "init", "--repo", str(repo))
    backup_ok(env, *run)
    with psycopg.connect(dsn) as conn:
        [fname] = add_attachments(conn, filestore, 1, random.Random(77))
        conn.commit()
    content = (filestore / fname).read_bytes()
    assert content
    digest = hashlib.sha256(content).hexdigest()
    # What a power cut after a killed run can leave: the object's name, and no bytes.
    leftover = repo / "objects" / digest[:2] / digest
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"")

    backup_ok(env, *run)
    assert leftover.stat().st_size > 0
    entry = next(f for f in show(env, str(repo), "latest")["filestore"]["files"]
                 if f["path"] == fname)  # fmt: skip
    assert entry["objects"] == [digest]
    result = backup(env, "verify", "--repo", str(repo), "--read-data")
    assert result.returncode == 0, result.stdout + result.stderr
