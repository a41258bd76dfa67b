"""`stats` and `diff`, on a folder and on S3 (moto)."""

from __future__ import annotations

import datetime as dt
import json
import random

import psycopg

from odbox_backup.stats import stats
from tests.backup.conftest import moto_for
from tests.backup.helpers import (
    authenticated_body,
    backup,
    backup_ok,
    backup_run,
    open_repo,
    pack_indexes,
    show,
    store_for,
)
from tests.helpers import one_error_line
from tests.odoo_data import add_attachments


def _stored_sizes(store):
    """Every object's stored size, read from the indexes as FORMAT.md describes them."""
    sizes = {}
    for doc in pack_indexes(store).values():
        for name, _, length in doc["blobs"]:
            sizes[name] = length
    for key in store.list("index"):
        doc = json.loads(authenticated_body(store.get(key)))
        for name, size in doc.get("objects", []):
            sizes[name] = size
    return sizes


def _objects(manifest):
    names = list(manifest["database"]["objects"])
    names.append(manifest["filestore"]["names"]["object"])  # the attachment names (FORMAT.md)
    for f in manifest["filestore"]["files"]:
        names += f["objects"]
    return dict.fromkeys(names)


def test_stats_counts_raw_stored_and_added_bytes(odoo, backend, env, request):
    _, dsn, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo, "--tag", "first")
    backup_run(env, backend, odoo)
    with psycopg.connect(dsn) as conn:
        add_attachments(conn, filestore, 5, random.Random(8))
    backup_run(env, backend, odoo)
    report = json.loads(backup_ok(env, "stats", "--repo", backend, "--json"))
    rows = report["snapshots"]
    assert len(rows) == 3 and rows[0]["tags"] == ["first"]

    sizes = _stored_sizes(store_for(backend, moto_for(backend, request)))
    seen: set[str] = set()
    for row in rows:
        manifest = show(env, backend, row["id"])
        names = _objects(manifest)
        assert row["raw_bytes"] == manifest["database"]["size"] + manifest["filestore"]["bytes"]
        assert row["files"] == manifest["filestore"]["count"]
        assert row["stored_bytes"] == sum(sizes[n] for n in names)
        assert row["added_bytes"] == sum(sizes[n] for n in names if n not in seen)
        seen.update(names)
    assert rows[1]["added_bytes"] < rows[1]["stored_bytes"] / 10  # dedup: almost nothing new
    assert rows[2]["added_objects"] >= 5  # the five new files
    total = report["total"]
    assert total["stored_bytes"] == sum(sizes[n] for n in seen)
    assert total["raw_bytes"] == sum(r["raw_bytes"] for r in rows)
    assert total["ratio"] > 2  # three snapshots of nearly the same data, compressed
    assert total["repository_bytes"] > total["stored_bytes"]
    assert report["growth"] == {"days": 30, "snapshots": 3, "added_bytes": total["stored_bytes"]}
    text = backup_ok(env, "stats", "--repo", backend)
    assert "last 30 days: 3 snapshots added" in text

    repo = open_repo(backend, moto_for(backend, request))
    later = stats(repo, repo.snapshot_ids(), now=dt.datetime.now(dt.UTC) + dt.timedelta(days=31))
    assert (later.growth_snapshots, later.growth_bytes) == (0, 0)


def test_diff_names_files_added_removed_and_whether_the_dump_changed(odoo, backend, env):
    _, dsn, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    with psycopg.connect(dsn) as conn:
        gone = conn.execute("SELECT store_fname FROM ir_attachment WHERE store_fname IS NOT NULL"
                            " ORDER BY id LIMIT 1").fetchone()[0]  # fmt: skip
        conn.execute("DELETE FROM ir_attachment WHERE store_fname = %s", (gone,))
        added = add_attachments(conn, filestore, 3, random.Random(9))
    (filestore / gone).unlink()
    backup_run(env, backend, odoo)
    first, second = (r["id"] for r in json.loads(backup_ok(env, "list", "--repo", backend,
                                                           "--json")))  # fmt: skip
    report = json.loads(backup_ok(env, "diff", "--repo", backend, first, second, "--json"))
    assert report["from"] == first and report["to"] == second
    files = report["files"]
    assert sorted(f["path"] for f in files["added"]) == sorted(set(added))
    assert [f["path"] for f in files["removed"]] == [gone]
    assert files["changed"] == []
    count = show(env, backend, second)["filestore"]["count"]
    assert files["unchanged"] == count - len(set(added))
    assert report["dump"]["reused"] is False and report["dump"]["objects_new"] >= 1

    same = json.loads(backup_ok(env, "diff", "--repo", backend, second, second, "--json"))
    assert same["dump"]["reused"] is True and same["dump"]["objects_new"] == 0
    assert same["files"]["added"] == same["files"]["removed"] == []
    text = backup_ok(env, "diff", "--repo", backend, first, second)
    assert f"- {gone}" in text and f"+ {added[0]}" in text
    assert "3 files added, 1 removed, 0 changed" in text


def test_stats_and_diff_of_an_encrypted_repository_need_the_identity(odoo, backend, env, tmp_path):
    from pyrage import x25519

    key = x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(str(key) + "\n")
    backup_ok(env, "init", "--repo", backend, "--recipient", str(key.to_public()))
    backup_run(env, backend, odoo)
    for args in (["stats"], ["diff", "latest", "latest"]):
        refused = backup(env, *args, "--repo", backend)
        assert refused.returncode == 2 and "pass --identity" in one_error_line(refused)
    report = json.loads(backup_ok(env, "stats", "--repo", backend, "--json", "--identity",
                                  str(tmp_path / "key.txt")))  # fmt: skip
    assert report["total"]["stored_bytes"] > 0
