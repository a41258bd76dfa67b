"""`restore` never loses data: new database and folder, verify, then swap; cold runs restart it."""

from __future__ import annotations

import os
import random

import psycopg
import pytest

from tests.backup.conftest import moto_for
from tests.backup.helpers import (
    backup,
    backup_ok,
    backup_run,
    db_dsn,
    key_holding,
    odoo_service,
    odoo_state,
    show,
    snapshot_then_change,
    store_for,
)
from tests.helpers import one_error_line
from tests.odoo_data import add_attachments


def test_restore_brings_back_the_snapshot_and_keeps_the_previous_data(
    postgres, odoo, backend, env, tmp_path
):
    name, dsn, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    at_backup = odoo_state(dsn, filestore)
    with psycopg.connect(dsn) as conn:  # life goes on after the backup
        add_attachments(conn, filestore, 2, random.Random(5))
        conn.execute("UPDATE res_partner SET name = name || ' (changed)'")
        conn.commit()
    changed = odoo_state(dsn, filestore)
    log, service = odoo_service(tmp_path)

    out = backup_ok(env, "restore", "--repo", backend, "latest", "--db", name,
                    "--filestore", str(filestore), *service)  # fmt: skip
    assert "attachments verified" in out and "kept the previous ones" in out
    assert odoo_state(dsn, filestore) == at_backup
    assert log.read_text().split() == ["stop", "start"]
    [previous_db] = postgres.psql(
        f"SELECT datname FROM pg_database WHERE datname LIKE '{name}_before_%'"
    ).splitlines()
    [previous_folder] = list(filestore.parent.glob("filestore.before-*"))
    assert odoo_state(db_dsn(postgres, previous_db),
                  previous_folder) == changed  # fmt: skip
    assert not list(filestore.parent.glob("*.restore-*"))


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_damaged_object_stops_the_restore_before_the_swap(
    postgres, odoo, backend, env, request, tmp_path, damage
):
    name, dsn, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    manifest = show(env, backend, "latest")
    victim = max(manifest["filestore"]["files"], key=lambda f: f["size"])["objects"][0]
    store = store_for(backend, moto_for(backend, request))
    key = key_holding(store, victim)
    if damage == "corrupt":
        blob = bytearray(store.get(key))
        blob[len(blob) // 2] ^= 0xFF
        store.put(key, bytes(blob))
    else:
        store.delete(key)
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE res_partner SET city = 'after the backup'")
        conn.commit()
    before = odoo_state(dsn, filestore)
    log, service = odoo_service(tmp_path)

    result = backup(env, "restore", "--repo", backend, "latest", "--db", name,
                    "--filestore", str(filestore), *service)  # fmt: skip
    assert result.returncode == 1
    line = one_error_line(result)
    assert ("missing" if damage == "missing" else "damaged") in line
    assert odoo_state(dsn, filestore) == before  # the live data, byte for byte
    assert not log.exists()  # Odoo was never stopped: the failure came before the swap
    leftovers = postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}_%'")
    assert leftovers == "" and sorted(p.name for p in filestore.parent.iterdir()) == ["filestore"]


def test_a_snapshot_of_a_box_that_lacked_an_attachment_restores_only_when_allowed(
    postgres, odoo, local_env, tmp_path
):
    """Odoo shows an attachment whose file is gone as empty; a snapshot of such a box has
    the row and not the file. The restore refuses it before the swap, saying why and what
    to pass, and with --allow-missing-attachments restores the box as it was."""
    env = local_env
    name, dsn, filestore = odoo
    with psycopg.connect(dsn) as conn:
        [(gone,)] = conn.execute(
            "SELECT store_fname FROM ir_attachment WHERE store_fname IS NOT NULL"
            " ORDER BY id LIMIT 1"
        ).fetchall()
    (filestore / gone).unlink()  # the row stays
    repo, at_backup, before = snapshot_then_change(
        env, tmp_path, odoo, "--allow-missing"
    )  # the run says it too (test_filestore.py)
    log, service = odoo_service(tmp_path)
    restore = ["restore", "--repo", repo, "latest", "--db", name, "--filestore", str(filestore),
               *service]  # fmt: skip

    result = backup(env, *restore)
    line = one_error_line(result)
    assert result.returncode == 1 and "names 1 attachment" in line and gone in line
    assert "nothing was swapped" in line and "--allow-missing-attachments" in line
    assert odoo_state(dsn, filestore) == before and not log.exists()
    assert not list(filestore.parent.glob("*.restore-*"))

    out = backup_ok(env, *restore, "--allow-missing-attachments")
    assert "attachments verified (1 missing)" in out and "warning" in out
    assert odoo_state(dsn, filestore) == at_backup


def test_restore_without_the_identity_or_with_a_wrong_one_fails_cleanly(
    odoo, env, backend, tmp_path
):
    from pyrage import x25519

    name, dsn, filestore = odoo
    key, wrong = x25519.Identity.generate(), x25519.Identity.generate()
    (tmp_path / "wrong.txt").write_text(str(wrong) + "\n")
    backup_ok(env, "init", "--repo", backend, "--recipient", str(key.to_public()))
    backup_run(env, backend, odoo)
    before = odoo_state(dsn, filestore)
    snapshot = backup_ok(env, "list", "--repo", backend, "--json")
    import json

    snapshot_id = json.loads(snapshot)[0]["id"]
    restore = ["restore", "--repo", backend, snapshot_id, "--db", name, "--filestore",
               str(filestore)]  # fmt: skip
    result = backup(env, *restore)
    assert result.returncode == 1 and "pass --identity" in one_error_line(result)
    result = backup(env, *restore, "--identity", str(tmp_path / "wrong.txt"))
    assert result.returncode == 1 and "cannot decrypt" in one_error_line(result)
    assert odoo_state(dsn, filestore) == before


def test_a_cold_backup_starts_odoo_again_even_when_it_fails(odoo, env, backend, tmp_path):
    name, _, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    log, service = odoo_service(tmp_path)
    out = backup_ok(env, "run", "--repo", backend, "--db", name, "--filestore", str(filestore),
                    "--cold", *service)  # fmt: skip
    assert log.read_text().split() == ["stop", "start"]
    assert show(env, backend, "latest")["mode"] == "cold"
    assert "stopping Odoo" in out and "starting Odoo" in out
    result = backup(env, "run", "--repo", backend, "--db", "no_such_db", "--filestore",
                    str(filestore), "--cold", *service)  # fmt: skip
    assert result.returncode == 1
    assert log.read_text().split() == ["stop", "start", "stop", "start"]
    assert backup(env, "run", "--repo", backend, "--db", name, "--filestore", str(filestore),
                  "--cold").returncode == 2  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")
def test_a_restore_run_as_root_gives_the_files_the_live_folders_owner(odoo, env, tmp_path):
    name, _, filestore = odoo
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_ok(env, "run", "--repo", repo, "--db", name, "--filestore", str(filestore))
    for path in [filestore, *filestore.rglob("*")]:
        os.chown(path, 65534, 65534)  # Odoo's own user on the box
    backup_ok(env, "restore", "--repo", repo, "latest", "--db", name,
              "--filestore", str(filestore))  # fmt: skip
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [filestore, *filestore.rglob("*")]}
    assert owners == {(65534, 65534)}


NOBODY = 65534  # Odoo's own user on the box, played by nobody


def _unusable_as(uid, folder):
    """What under `folder` a process of `uid` cannot use as Odoo does: a file it cannot
    read, a folder it cannot list, enter or add to. find(1) runs as that user (its cwd is
    the folder, entered before it gives up root: the parents are root's) and asks the
    kernel through access(2)."""
    import subprocess

    done = subprocess.run(
        ["find", ".", "(", "-type", "f", "!", "-readable", ")", "-o", "(", "-type", "d", "!",
         "(", "-readable", "-writable", "-executable", ")", ")", "-print"],
        cwd=folder, user=uid, group=uid, extra_groups=[], capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout.split() + done.stderr.splitlines()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")
def test_a_restore_on_a_new_box_gives_the_filestore_its_parents_owner_and_odoo_can_read_it(
    odoo, local_env, tmp_path
):
    """Bootstrap mode: dbinit made the database, Odoo has no filestore folder yet; the parent
    is the odoo user's data folder (odoo:odoo 0750). A restore run as root must leave a
    folder that user reads and writes (it left root:root 750: every attachment read empty)."""
    env = local_env
    name, dsn, filestore = odoo
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_run(env, repo, odoo)
    at_backup = odoo_state(dsn, filestore)
    data = tmp_path / "newbox" / "data" / "filestore"
    data.mkdir(parents=True)
    os.chown(data, NOBODY, NOBODY)
    data.chmod(0o750)
    new = data / name

    backup_ok(env, "restore", "--repo", repo, "latest", "--db", name, "--filestore", str(new))
    assert odoo_state(dsn, new)[1] == at_backup[1]
    entries = [new, *new.rglob("*")]
    assert {(p.stat().st_uid, p.stat().st_gid) for p in entries} == {(NOBODY, NOBODY)}
    assert {oct(p.stat().st_mode & 0o7777) for p in entries if p.is_dir()} == {"0o750"}
    assert {oct(p.stat().st_mode & 0o7777) for p in entries if p.is_file()} == {"0o640"}
    assert _unusable_as(NOBODY, new) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")
def test_the_readability_check_names_what_the_owner_cannot_read(tmp_path):
    from odbox_backup.restore import unreadable

    folder = tmp_path / "filestore"
    (folder / "ab").mkdir(parents=True)
    (folder / "ab" / "ok").write_bytes(b"x")
    (folder / "ab" / "secret").write_bytes(b"x")
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    assert unreadable(folder) == (0, "")
    (folder / "ab" / "secret").chmod(0o044)  # group and others may read; the owner may not
    assert unreadable(folder) == (1, str(folder / "ab" / "secret"))
    os.chown(folder / "ab" / "secret", 0, 0)
    (folder / "ab" / "secret").chmod(0o600)  # root's, as a restore run as root left it
    assert unreadable(folder) == (1, str(folder / "ab" / "secret"))
    (folder / "ab").chmod(0o500)  # no new upload in ab/
    assert unreadable(folder)[0] == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")
def test_handing_the_restored_folder_over_never_follows_a_symlink(tmp_path):
    """The parent is the odoo user's: it could put symlinks where the restore writes. The
    hand-over changed the mode of what a symlink in the folder pointed to (chmod follows)."""
    from odbox_backup.restore import RestoreFailed, adopt

    parent = tmp_path / "data"
    (parent / "filestore.restore-x" / "ab").mkdir(parents=True)
    os.chown(parent, NOBODY, NOBODY)
    parent.chmod(0o750)
    secret = tmp_path / "shadow"
    secret.write_text("root's\n")
    secret.chmod(0o600)
    folder = parent / "filestore.restore-x"
    (folder / "ab" / "file").write_bytes(b"x")
    (folder / "ab" / "link").symlink_to(secret)
    adopt(folder, parent)
    assert (secret.stat().st_uid, oct(secret.stat().st_mode & 0o777)) == (0, "0o600")
    assert (folder / "ab" / "file").stat().st_uid == NOBODY
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (parent / "swapped").symlink_to(elsewhere)  # a folder replaced by a symlink
    with pytest.raises(RestoreFailed):
        adopt(parent / "swapped", parent)
    assert elsewhere.stat().st_uid == 0
