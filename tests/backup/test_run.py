"""`init`, `run`, `list`, `show` on a local folder and on S3 (moto), with Odoo-shaped data."""

from __future__ import annotations

import random
import subprocess

import psycopg

from odbox_backup.backup import PathsOf, entry_size
from odbox_backup.manifests import JSONTexts, entry_text
from tests.backup.conftest import moto_for
from tests.backup.helpers import (
    backup,
    backup_ok,
    backup_run,
    open_repo,
    show,
    store_for,
)
from tests.helpers import one_error_line
from tests.odoo_data import add_attachments, table_checksums


def test_a_snapshot_holds_the_dump_and_every_file(postgres, odoo, backend, env, request, tmp_path):
    name, dsn, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    out = backup_run(env, backend, odoo)
    assert "snapshot " in out
    listed = backup_ok(env, "list", "--repo", backend, "--json")
    import json

    [entry] = json.loads(listed)
    manifest = show(env, backend, "latest")
    assert manifest["id"] == entry["id"]
    assert manifest["odoo"]["version"] == "17.0"
    assert manifest["odoo"]["modules"]["base"] == "17.0.1.3"
    assert manifest["database"]["name"] == name and manifest["mode"] == "hot"

    repo = open_repo(backend, moto_for(backend, request))
    dump = b"".join(repo.get_object(n) for n in manifest["database"]["objects"])
    assert len(dump) == manifest["database"]["size"] and "sha256" not in manifest["database"]
    files = {f["path"]: f for f in manifest["filestore"]["files"]}
    on_disk = {p.relative_to(filestore).as_posix(): p for p in filestore.rglob("*") if p.is_file()}
    assert set(files) == set(on_disk)
    for path, entry in files.items():
        assert b"".join(repo.get_object(n) for n in entry["objects"]) == on_disk[path].read_bytes()

    # The dump restores (with pg_restore by hand: the restore command is not written yet).
    postgres.psql("DROP DATABASE IF EXISTS restored_check")
    postgres.psql("CREATE DATABASE restored_check")
    subprocess.run(
        [postgres.bindir / "pg_restore", "--no-owner", "-d", "restored_check"],
        input=dump, env=postgres.env, check=True, capture_output=True,
    )  # fmt: skip
    restored_dsn = postgres.dsn.replace("dbname=postgres", "dbname=restored_check")
    with psycopg.connect(dsn) as a, psycopg.connect(restored_dsn) as b:
        assert table_checksums(a) == table_checksums(b)
    postgres.psql("DROP DATABASE restored_check")


def test_dedup_no_change_stores_no_file_and_new_attachments_only_themselves(
    odoo, backend, env, request
):
    name, dsn, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    run = ["run", "--repo", backend, "--db", name, "--filestore", str(filestore)]
    backup_ok(env, *run)
    repo = open_repo(backend, moto_for(backend, request))
    first = show(env, backend, "latest")
    before = repo.known_objects()

    backup_ok(env, *run)
    second = show(env, backend, "latest")
    assert second["id"] != first["id"]
    file_objects = {n for f in second["filestore"]["files"] for n in f["objects"]}
    assert file_objects <= before  # no filestore object is new
    new = set(open_repo(backend, moto_for(backend, request)).known_objects()) - before
    assert new <= set(second["database"]["objects"])  # only dump chunks changed, if any
    assert second["filestore"]["names"] == first["filestore"]["names"]  # the same names object

    with psycopg.connect(dsn) as conn:
        added = add_attachments(conn, filestore, 3, random.Random(99))
        conn.commit()
    known = set(open_repo(backend, moto_for(backend, request)).known_objects())
    backup_ok(env, *run)
    third = show(env, backend, "latest")
    new = set(open_repo(backend, moto_for(backend, request)).known_objects()) - known
    new_files = {n for f in third["filestore"]["files"] if f["path"] in added for n in f["objects"]}
    changed = set(third["database"]["objects"]) | {third["filestore"]["names"]["object"]}
    assert new - changed == new_files - known  # beside the dump's chunks and the names object


def test_an_encrypted_repository_holds_no_cleartext(odoo, backend, env, request, tmp_path):
    from pyrage import x25519

    name, dsn, filestore = odoo
    key = x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(str(key) + "\n")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(str(x25519.Identity.generate()) + "\n")
    backup_ok(env, "init", "--repo", backend, "--recipient", str(key.to_public()))
    backup_run(env, backend, odoo)

    with psycopg.connect(dsn) as conn:
        partner = conn.execute("SELECT name FROM res_partner ORDER BY id LIMIT 1").fetchone()[0]
    text_file = next(p for p in filestore.rglob("*") if p.is_file() and p.stat().st_size > 200
                     and b"invoice" in p.read_bytes() + b"invoice")  # fmt: skip
    needles = [partner.encode(), text_file.read_bytes()[:64], b"res_partner", b"ir_attachment"]
    store = store_for(backend, moto_for(backend, request))
    for key_name in store.list(""):
        data = store.get(key_name)
        for needle in needles:
            assert needle not in data, f"{needle!r} in {key_name}"

    ids = backup_ok(env, "list", "--repo", backend)
    assert "?" in ids  # IDs and times without the identity, details need it
    result = backup(env, "show", "--repo", backend, "latest")
    assert result.returncode == 1
    assert "is encrypted: pass --identity" in one_error_line(result)
    result = backup(env, "show", "--repo", backend, "latest", "--identity", str(wrong))
    assert result.returncode == 1
    assert "cannot decrypt snapshot" in one_error_line(result)
    manifest = show(env, backend, "latest", "--identity", str(tmp_path / "key.txt"))
    assert manifest["database"]["name"] == name


def test_the_second_pass_skips_exactly_the_paths_the_first_read():
    paths = ["ab/cd", "ab/cde", "ab/c", "b/é", 'q/"x"', "zz/1"]
    texts = JSONTexts(sorted(entry_text(p, 1, ["0" * 64]) for p in paths[:-1]))
    first = PathsOf(texts, but={hash("ab/c")})  # the hashes of the unsettled paths
    assert [p in first for p in paths] == [True, True, False, True, True, False]
    assert "ab/cd/" not in first and "ab/" not in first and "" not in first and 7 not in first


def test_an_entry_read_again_replaces_the_first_in_place_and_the_order_holds():
    paths = ["ab/c", "ab/cd", "ab/cde", "b/é", 'q/"x"']
    texts = JSONTexts(sorted(entry_text(p, 1, ["0" * 64]) for p in paths))
    first = PathsOf(texts)
    for path, size in (("ab/cd", 1234567), ("ab/c", 9), ('q/"x"', 0)):
        assert first.replace(entry_text(path, size, ["1" * 64]))
    assert not first.replace(entry_text("ab/cdef", 1, ["1" * 64]))  # not there: appended
    assert texts == sorted(texts) and len(texts) == len(paths)
    assert [entry_size(t) for t in texts] == [9, 1234567, 1, 1, 0]
