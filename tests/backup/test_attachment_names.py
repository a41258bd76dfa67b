"""`ls`'s attachment names: from the one object a run stores (`filestore.names`), never
from the dump, for new snapshots; from the dump for those without it; refused when forged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
from pyrage import x25519

from odbox_backup.attachments import dump_attachments, stored_names
from odbox_backup.manifests import new_snapshot_id
from tests.backup.conftest import moto_for
from tests.backup.helpers import backup, backup_ok, backup_run, key_holding, open_repo
from tests.helpers import one_error_line
from tests.odoo_data import store_file


def _attachment(dsn: str, filestore: Path, content: bytes, name: str) -> str:
    store_fname, checksum = store_file(filestore, content)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO ir_attachment (name, res_model, res_id, mimetype, store_fname, "
            "checksum, file_size) VALUES (%s, 'res.partner', 5, 'text/plain', %s, %s, %s)",
            (name, store_fname, checksum, len(content)),
        )
    return store_fname


def _encrypted_run(env: dict[str, str], backend: str, tmp_path: Path, odoo: Any) -> Path:
    key = x25519.Identity.generate()
    identity = tmp_path / "key.txt"
    identity.write_text(str(key) + "\n")
    backup_ok(env, "init", "--repo", backend, "--recipient", str(key.to_public()))
    backup_run(env, backend, odoo)
    return identity


def _ls(env: dict[str, str], backend: str, identity: Path, *args: str) -> list[dict[str, Any]]:
    out = backup_ok(env, "ls", "--repo", backend, *args, "--identity", str(identity), "--json")
    return list(json.loads(out))


def _old_style_copy(repo: Any, snapshot_id: str) -> str:
    """The snapshot again under a new ID, without `filestore.names`: as one made before it
    existed (or by import or k8s-migrate)."""
    manifest = repo.read_snapshot(snapshot_id)  # its files written as a run writes them
    del manifest["filestore"]["names"]
    manifest["id"] = new_snapshot_id()
    repo.write_snapshot(manifest)
    return str(manifest["id"])


def test_ls_of_a_new_snapshot_names_its_files_without_reading_the_dump(
    odoo, backend, env, tmp_path, request
):
    _, dsn, filestore = odoo
    path = _attachment(dsn, filestore, b"minutes of the meeting\n", "minutes\n2026.txt")
    identity = _encrypted_run(env, backend, tmp_path, odoo)
    repo = open_repo(backend, moto_for(backend, request), identity)
    manifest = repo.read_snapshot(repo.snapshot_ids()[-1], compact=False)
    part = manifest["filestore"]["names"]
    with psycopg.connect(dsn) as conn:
        count = conn.execute("SELECT count(*) FROM ir_attachment WHERE store_fname <> ''")
        assert part["rows"] == count.fetchone()[0] > 1  # type: ignore[index]
    # What the names object says is what the dump says, for every file.
    assert stored_names(repo, part) == dump_attachments(repo, manifest["database"])

    for name in manifest["database"]["objects"]:  # the dump gone: ls never reads it
        repo.store.delete(key_holding(repo.store, name))
    [one] = _ls(env, backend, identity, "latest", path)
    assert [(a["name"], a["res_model"], a["res_id"]) for a in one["attachments"]] == [
        ("minutes\n2026.txt", "res.partner", 5)
    ]
    every = _ls(env, backend, identity, "latest")
    assert {e["path"]: e["attachments"] for e in every}[path] == one["attachments"]
    assert sum(len(e["attachments"]) for e in every) == part["rows"]


def test_ls_of_a_snapshot_without_a_names_object_reads_the_names_from_its_dump(
    odoo, local_env, tmp_path
):
    _, dsn, filestore = odoo
    path = _attachment(dsn, filestore, b"an older letter\n", "letter.txt")
    backend = str(tmp_path / "repo")
    identity = _encrypted_run(local_env, backend, tmp_path, odoo)
    repo = open_repo(backend, None, identity)
    new = repo.snapshot_ids()[-1]
    part = repo.read_snapshot(new)["filestore"]["names"]
    old = _old_style_copy(repo, new)
    repo.store.delete(key_holding(repo.store, part["object"]))  # only the dump is left

    [one] = _ls(local_env, backend, identity, old, path)
    assert [a["name"] for a in one["attachments"]] == ["letter.txt"]
    missing = backup(local_env, "ls", "--repo", backend, new, path, "--identity", str(identity))
    assert missing.returncode == 1 and "missing" in one_error_line(missing)


def test_a_forged_names_object_is_refused(odoo, backend, env, tmp_path, request):
    """Whoever can write into the bucket (the box's credentials) knows the recipients, so can
    encrypt an object of their own; its name is the hash of the true content, which the
    authenticated manifest names: the forgery does not match it."""
    _, dsn, filestore = odoo
    path = _attachment(dsn, filestore, b"the real one\n", "real.txt")
    identity = _encrypted_run(env, backend, tmp_path, odoo)
    repo = open_repo(backend, moto_for(backend, request), identity)
    part = repo.read_snapshot(repo.snapshot_ids()[-1])["filestore"]["names"]
    forged = "[\n" + json.dumps([path, 1, "forged.exe", "res.partner", 5]) + "\n]"
    repo.store.put(key_holding(repo.store, part["object"]), repo.codec.encode(forged.encode()),
                   replace=True)  # fmt: skip

    result = backup(env, "ls", "--repo", backend, "latest", path, "--identity", str(identity))
    assert result.returncode == 1
    assert "does not match its name" in one_error_line(result)
    assert "forged" not in result.stdout + result.stderr
    listed = _ls(env, backend, identity, "latest", path, "--no-names")  # the files still are
    assert [e["path"] for e in listed] == [path]


def test_ls_of_a_database_without_ir_attachment_lists_files_without_names(
    odoo, local_env, tmp_path
):
    _, dsn, filestore = odoo
    with psycopg.connect(dsn) as conn:
        conn.execute("DROP TABLE ir_attachment CASCADE")
    backend = str(tmp_path / "repo")
    identity = _encrypted_run(local_env, backend, tmp_path, odoo)
    repo = open_repo(backend, None, identity)
    new = repo.snapshot_ids()[-1]
    assert repo.read_snapshot(new)["filestore"]["names"]["rows"] == 0
    old = _old_style_copy(repo, new)
    for snapshot_id in (new, old):
        listed = _ls(local_env, backend, identity, snapshot_id)
        assert len(listed) == len(list(filestore.rglob("*/*"))) > 0
        assert all(e["attachments"] == [] for e in listed)


def test_ls_finds_the_files_of_an_import_written_with_sorted_entry_keys(odoo, local_env, tmp_path):
    """Imports before this version wrote each entry `{"objects":…,"path":…,"size":…}`; `ls`
    searched for entries that start with their path, and listed none."""
    _, dsn, filestore = odoo
    path = _attachment(dsn, filestore, b"an imported file\n", "imported.txt")
    backend = str(tmp_path / "repo")
    identity = _encrypted_run(local_env, backend, tmp_path, odoo)
    repo = open_repo(backend, None, identity)
    manifest = repo.read_snapshot(repo.snapshot_ids()[-1], compact=False)  # entries as dicts
    del manifest["filestore"]["names"]
    manifest["id"] = repo.next_snapshot_id()
    repo.write_snapshot(manifest)  # written with sorted keys, as those imports were
    listed = _ls(local_env, backend, identity, str(manifest["id"]))
    assert {e["path"] for e in listed} == {f["path"] for f in manifest["filestore"]["files"]}
    assert [a["name"] for a in {e["path"]: e for e in listed}[path]["attachments"]] == [
        "imported.txt"
    ]
