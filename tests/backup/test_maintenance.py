"""`verify`, `prune`, `copy` and `drop-previous` on a local folder and on S3 (moto)."""

from __future__ import annotations

import json
import random

import psycopg

from tests.backup.conftest import moto_for
from tests.backup.helpers import (
    backup,
    backup_ok,
    backup_run,
    dry_prune,
    key_holding,
    open_repo,
    show,
    store_for,
    verify_json,
)
from tests.helpers import one_error_line
from tests.odoo_data import add_attachments, filestore_digest, store_file, table_checksums


def test_verify_finds_missing_and_damaged_objects(odoo, backend, env, request):
    store_file(odoo[2], random.Random(3).randbytes(2 << 20))  # a large file: stored alone
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    backup_run(env, backend, odoo)
    code, report = verify_json(env, backend, "--read-data")
    assert code == 0 and report["ok"] and len(report["snapshots"]) == 2
    assert report["objects"]["read"] == report["objects"]["referenced"] > 0
    assert "verify ok: 2 snapshots" in backup_ok(env, "verify", "--repo", backend)

    manifest = show(env, backend, "latest")
    files = sorted(manifest["filestore"]["files"], key=lambda f: f["size"])
    # A small file, in a pack, and the large file, alone: two keys.
    damaged, missing = files[2]["objects"][0], files[-1]["objects"][0]
    store = store_for(backend, moto_for(backend, request))
    damaged_key, missing_key = key_holding(store, damaged), key_holding(store, missing)
    assert damaged_key != missing_key
    blob = bytearray(store.get(damaged_key))
    blob[len(blob) // 2] ^= 0x01
    store.put(damaged_key, bytes(blob))
    store.delete(missing_key)

    code, report = verify_json(env, backend)  # presence only: the damage is not seen, the gap is
    assert code == 3 and not report["ok"]
    assert all("1 object missing" in " ".join(s["problems"]) for s in report["snapshots"])
    code, report = verify_json(env, backend, "--read-data", manifest["id"])
    assert code == 3 and [s["id"] for s in report["snapshots"]] == [manifest["id"]]
    problems = " ".join(report["problems"])
    assert "missing" in problems and "damaged" in problems
    plain = backup(env, "verify", "--repo", backend, "--read-data")
    assert plain.returncode == 3 and "PROBLEMS" in plain.stdout
    assert "damaged" in plain.stderr


def test_prune_forgets_by_policy_and_deletes_only_unused_objects(odoo, backend, env, request):
    _, dsn, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    rng = random.Random(8)
    for _ in range(3):
        with psycopg.connect(dsn) as conn:
            add_attachments(conn, filestore, 2, rng)
            conn.commit()
        backup_run(env, backend, odoo)
    dry, ids, before = dry_prune(env, backend, moto_for(backend, request))
    assert sorted(dry["forgotten"]) == ids[:2] and dry["objects_deleted"] > 0
    after_dry = open_repo(backend, moto_for(backend, request))
    assert after_dry.snapshot_ids() == ids and after_dry.known_objects() == before

    out = backup_ok(env, "prune", "--repo", backend, "--keep-last", "1")
    assert "forgot 2 of 3 snapshots" in out
    repo = open_repo(backend, moto_for(backend, request))
    assert repo.snapshot_ids() == ids[2:]
    kept = set(repo.objects_of(repo.read_snapshot(ids[2])))
    assert repo.known_objects() == kept  # every unused object went, every used one stayed
    assert len(before - kept) == dry["objects_deleted"]
    code, report = verify_json(env, backend, "--read-data")
    assert code == 0, report["problems"]

    result = backup(env, "prune", "--repo", backend)
    assert result.returncode == 2 and "at least one --keep" in one_error_line(result)


def test_copy_sends_only_what_the_destination_lacks_and_restores_there(
    postgres, odoo, backend, env, tmp_path
):
    from pyrage import x25519

    name, dsn, filestore = odoo
    local = str(tmp_path / "local-repo")
    key = x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(str(key) + "\n")
    backup_ok(env, "init", "--repo", local)
    backup_ok(env, "init", "--repo", backend, "--recipient", str(key.to_public()))
    backup_run(env, local, odoo)
    at_first = (table_checksums(psycopg.connect(dsn)), filestore_digest(filestore))
    out = backup_ok(env, "copy", "--repo", local, "latest", "--to", backend)
    assert "copied snapshot" in out
    first_id = json.loads(backup_ok(env, "list", "--repo", local, "--json"))[0]["id"]
    assert "already in" in backup_ok(env, "copy", "--repo", local, first_id, "--to", backend)

    with psycopg.connect(dsn) as conn:
        add_attachments(conn, filestore, 1, random.Random(3))
        conn.commit()
    backup_run(env, local, odoo)
    out = backup_ok(env, "copy", "--repo", local, "all", "--to", backend)
    sent = int(out.split("objects,")[0].rsplit(" ", 2)[-2])
    total = show(env, local, "latest")["totals"]["objects"]
    assert 0 < sent < total / 2

    listed = json.loads(backup_ok(env, "list", "--repo", backend, "--json",
                                  "--identity", str(tmp_path / "key.txt")))  # fmt: skip
    assert [r["id"] for r in listed] == [
        r["id"] for r in json.loads(backup_ok(env, "list", "--repo", local, "--json"))
    ]
    assert "source" in show(env, backend, first_id, "--identity", str(tmp_path / "key.txt"))
    restored = tmp_path / "restored" / "filestore"
    backup_ok(env, "restore", "--repo", backend, first_id, "--db", f"{name}_copy",
              "--filestore", str(restored), "--identity", str(tmp_path / "key.txt"))  # fmt: skip
    with psycopg.connect(dsn.replace(f"dbname={name}", f"dbname={name}_copy")) as conn:
        assert (table_checksums(conn), filestore_digest(restored)) == at_first


def test_drop_previous_removes_what_restores_kept(postgres, odoo, env, tmp_path):
    name, _, filestore = odoo
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_run(env, repo, odoo)
    for _ in range(2):
        backup_ok(env, "restore", "--repo", repo, "latest", "--db", name,
                  "--filestore", str(filestore))  # fmt: skip
    kept = postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}_before_%'")
    assert len(kept.splitlines()) == 2 and len(list(filestore.parent.glob("*.before-*"))) == 2

    dry = backup_ok(env, "drop-previous", "--db", name, "--filestore", str(filestore), "--dry-run")
    assert dry.count("would drop") == 4
    assert len(list(filestore.parent.glob("*.before-*"))) == 2
    out = backup_ok(env, "drop-previous", "--db", name, "--filestore", str(filestore))
    assert out.count("dropped") == 4
    assert postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}%'") == name
    assert sorted(p.name for p in filestore.parent.iterdir()) == ["filestore"]
    again = backup_ok(env, "drop-previous", "--db", name, "--filestore", str(filestore))
    assert "nothing to drop" in again


def test_drop_previous_ends_the_sessions_open_on_a_kept_database(postgres, odoo, env, tmp_path):
    """A psql left open on a kept copy made drop-previous say "nothing to drop", exit 0."""
    name, dsn, filestore = odoo
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_run(env, repo, odoo)
    backup_ok(env, "restore", "--repo", repo, "latest", "--db", name, "--filestore", str(filestore))
    kept = postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}_before_%'")
    with psycopg.connect(
        dsn.replace(f"dbname={name}", f"dbname={kept}"), application_name="report"
    ) as session:
        pid = session.info.backend_pid
        out = backup_ok(env, "drop-previous", "--db", name, "--filestore", str(filestore))
    assert f"dropped database {kept} (ended its sessions: pid {pid} of postgres (report))" in out
    assert postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}%'") == name
    assert sorted(p.name for p in filestore.parent.iterdir()) == ["filestore"]
