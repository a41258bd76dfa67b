"""Objects are flushed with one syncfs before the manifest, not fsynced one by one; an object
newer than every manifest (left by a run that died, possibly empty after a power cut) is
written again when needed, never trusted."""

from __future__ import annotations

import hashlib
import json
import random

import psycopg
import pytest

from tests.backup.helpers import backup, backup_ok, open_repo, show
from tests.odoo_data import add_attachments


@pytest.mark.parametrize("left", ["object", "pack"])
def test_an_object_a_dead_run_left_is_written_again(odoo, env, tmp_path, left):
    name, dsn, filestore = odoo
    repo = tmp_path / "repo"
    run = ["run", "--repo", str(repo), "--db", name, "--filestore", str(filestore), "--no-cache"]
    backup_ok(env, "init", "--repo", str(repo))
    backup_ok(env, *run)
    with psycopg.connect(dsn) as conn:
        [fname] = add_attachments(conn, filestore, 1, random.Random(77))
        conn.commit()
    content = (filestore / fname).read_bytes()
    assert 0 < len(content) < 1 << 20  # a small file: it goes into a pack
    digest = hashlib.sha256(content).hexdigest()
    # What a power cut after a killed run can leave: the object's name, and no bytes (alone,
    # or a pack with its index).
    if left == "object":
        leftover = repo / "objects" / digest[:2] / digest
    else:
        pack_id = "ab" * 32
        leftover = repo / "packs" / pack_id[:2] / pack_id
        index = {"pack": pack_id, "size": len(content) + 200, "blobs": [[digest, 0, len(content)]]}
        (repo / "index").mkdir(exist_ok=True)
        auth = open_repo(str(repo), None).auth  # the box's own index: authenticated
        assert auth is not None
        (repo / "index" / pack_id).write_bytes(
            auth.wrap("index", pack_id, json.dumps(index).encode())
        )
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"")

    backup_ok(env, *run)
    reopened = open_repo(str(repo), None)
    assert reopened.location(digest) != ("ab" * 32, 0)  # the newer pack's index wins
    entry = next(f for f in show(env, str(repo), "latest")["filestore"]["files"]
                 if f["path"] == fname)  # fmt: skip
    assert entry["objects"] == [digest]
    result = backup(env, "verify", "--repo", str(repo), "--read-data")
    assert result.returncode == 0, result.stdout + result.stderr
    assert reopened.get_object(digest) == content
