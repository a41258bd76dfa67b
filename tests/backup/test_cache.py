"""The box cannot read its encrypted repository: its cache lets runs skip what did not change."""

from __future__ import annotations

import json
import random
from pathlib import Path

import psycopg
import pytest

from tests.backup.conftest import moto_for
from tests.backup.helpers import (
    backup_ok,
    key_holding,
    open_repo,
    show,
    store_for,
    verify_json,
)
from tests.odoo_data import add_attachments


def _new(out):
    """(new objects, new bytes text) from run's last line."""
    return int(out.rsplit(" new in ", 1)[1].split()[0])


def test_an_encrypted_box_skips_unchanged_files_and_an_unchanged_database(
    odoo, backend, env, tmp_path, request
):
    from pyrage import x25519

    name, dsn, filestore = odoo
    key = x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(str(key) + "\n")
    cache = tmp_path / "cache"
    run = ["run", "--repo", backend, "--db", name, "--filestore", str(filestore),
           "--cache-dir", str(cache)]  # fmt: skip
    backup_ok(env, "init", "--repo", backend, "--recipient", str(key.to_public()))
    backup_ok(env, *run)
    assert len(list(cache.glob("*.jsonl"))) == 1

    # Unchanged files are not read again. To see it, one file's bytes change behind Odoo's
    # back (Odoo never does that: a file's name is its content's SHA-1): the cache wins.
    victim_file = max(
        (p for p in filestore.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    original = victim_file.read_bytes()
    victim_file.write_bytes(bytes(b ^ 0xFF for b in original[:64]) + original[64:])
    backup_ok(env, *run)
    victim_file.write_bytes(original)
    identity = ["--identity", str(tmp_path / "key.txt")]
    first, second = (
        {
            f["path"]: f["objects"]
            for f in show(env, backend, r["id"], *identity)["filestore"]["files"]
        }
        for r in json.loads(backup_ok(env, "list", "--repo", backend, "--json"))
    )
    assert second == first  # the changed file was not read: its objects are the old ones

    with psycopg.connect(dsn) as conn:
        fnames = add_attachments(conn, filestore, 2, random.Random(1))
        conn.commit()
    backup_ok(env, *run)
    manifest = show(env, backend, "latest", *identity)
    assert {f["path"] for f in manifest["filestore"]["files"]} >= set(fnames)

    # The cache is never trusted for content: an object it names that is gone is stored again.
    victim = manifest["filestore"]["files"][0]["objects"][0]
    store = store_for(backend, moto_for(backend, request))
    store.delete(key_holding(store, victim))
    backup_ok(env, *run)
    assert victim in open_repo(backend, moto_for(backend, request)).known_objects()
    code, report = verify_json(env, backend, "latest", "--read-data", *identity)
    assert [s["ok"] for s in report["snapshots"]] == [True], report["problems"]
    [problem] = report["problems"]  # the pack deleted above, whose index is still there
    assert code == 3 and "is missing" in problem

    # A broken cache file is ignored: the run reads everything, and keeps a new cache.
    cache_file = next(cache.glob("*.jsonl"))
    header, *entries = cache_file.read_text().splitlines()
    for broken in ("{not json", "\n".join([header, "{damaged entry", *entries])):
        cache_file.write_text(broken)
        out = backup_ok(env, *run)
        assert _new(out) <= 2
        header = cache_file.read_text().splitlines()[0]
        assert json.loads(header)["id"] == show(env, backend, "latest", *identity)["id"]


def test_an_unchanged_database_is_not_dumped_again(postgres, odoo, tmp_path):
    """Same cluster, same WAL position, every object there: the previous dump stands."""
    from odbox_backup.backup import Facts, Source, _unchanged_dump
    from odbox_backup.repository import Repository
    from odbox_backup.store import LocalStore

    name, dsn, filestore = odoo
    repo = Repository.init(LocalStore(tmp_path / "repo"))
    stored = [repo.put_object(b"chunk %d" % i)[0] for i in range(3)]
    wal = {"lsn": "0/1A2B3C4", "system": "7300000000000000001"}
    previous = {"id": "x", "database": {"name": name, "pg_version": "15.18", "wal": wal,
                                       "format": "pg_dump-custom", "objects": stored}}  # fmt: skip
    source = Source(dsn, name, filestore)
    facts = Facts("15.18", {}, "17.0", dict(wal))
    assert _unchanged_dump(repo, source, facts, previous) == previous["database"]
    for other in [Facts("15.18", {}, "17.0", {**wal, "lsn": "0/1A2B3C5"}),
                  Facts("15.18", {}, "17.0", {**wal, "system": "7300000000000000002"}),
                  Facts("16.4", {}, "17.0", wal), Facts("15.18", {}, "17.0", None)]:  # fmt: skip
        assert _unchanged_dump(repo, source, other, previous) is None
    assert _unchanged_dump(repo, Source(dsn, "other", filestore), facts, previous) is None
    repo.store.delete(repo.object_key(stored[1]))
    assert _unchanged_dump(Repository.open(repo.store), source, facts, previous) is None


def test_a_run_that_reuses_the_dump_reuses_the_attachment_names_and_walks_the_files_once(
    odoo, tmp_path, monkeypatch
):
    """A run with no change to the database read every ir_attachment row again for the names
    object, and walked the filestore a second time for files that came during a dump it did
    not make: 0.15 s of a 0.6 s run at 20,000 files. The database's facts are pinned (a
    checkpoint would move the WAL), and the files are older than a file still being written;
    through the cache too, as the encrypted box reads its last snapshot. A new file modified
    in the last seconds is still read again."""
    import os
    import time

    from odbox_backup import backup, cache
    from odbox_backup.repository import Repository
    from odbox_backup.store import LocalStore

    name, dsn, filestore = odoo
    old = time.time() - 3600
    for path in filestore.rglob("*"):
        os.utime(path, (old, old))
    facts = backup._odoo_facts(dsn)
    assert facts.wal is not None
    monkeypatch.setattr(backup, "_odoo_facts", lambda conninfo: facts)
    repo = Repository.init(LocalStore(tmp_path / "repo"))
    source = backup.Source(dsn, name, filestore)
    first = backup.run_backup(repo, source)
    assert cache.save(tmp_path / "cache", repo, first) is None
    from_cache = cache.load(tmp_path / "cache", repo)

    walks: list[object] = []
    real_walk = backup.read_filestore
    monkeypatch.setattr(
        backup, "read_filestore", lambda *a, **k: walks.append(a) or real_walk(*a, **k)
    )
    monkeypatch.setattr(backup, "store_names", lambda *a: pytest.fail("the names were read again"))
    for previous in (first, from_cache):
        walks.clear()
        again = backup.run_backup(repo, source, previous=previous)
        assert again["database"] == first["database"]
        assert again["filestore"]["names"] == first["filestore"]["names"]
        assert again["filestore"]["files"] == first["filestore"]["files"] and len(walks) == 1
    walks.clear()
    (filestore / "ff").mkdir(exist_ok=True)
    (filestore / "ff" / ("f" * 40)).write_bytes(b"a file being written as the run reads")
    backup.run_backup(repo, source, previous=first)
    assert len(walks) == 2  # a new file, modified in the last seconds, is read again


def test_the_default_cache_folder_and_no_cache(odoo, env, tmp_path):
    name, _, filestore = odoo
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    repo_id = json.loads((tmp_path / "repo" / "config.json").read_text())["id"]
    kept = Path(env["XDG_CACHE_HOME"]) / "odbox-backup" / f"{repo_id}.jsonl"
    run = ["run", "--repo", repo, "--db", name, "--filestore", str(filestore)]
    backup_ok(env, *run, "--no-cache")
    assert not kept.exists()
    backup_ok(env, *run)
    assert json.loads(kept.read_text().splitlines()[0])["repository"] == repo_id
    systemd = tmp_path / "systemd-cache"
    backup_ok({**env, "CACHE_DIRECTORY": str(systemd)}, *run)
    assert (systemd / f"{repo_id}.jsonl").is_file()
