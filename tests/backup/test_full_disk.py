"""A full disk, on the repository or under the filestore a restore writes: a clear line, a
non-zero exit, nothing lost.

The disks are real small file systems (tmpfs, from the `small_filesystems`
fixture; skipped where the tests cannot mount, CI runs as root).
"""

from __future__ import annotations

import json
import os
import shutil

import psycopg

from odbox_backup.store import LocalStore
from tests.backup.helpers import backup, backup_ok, env_for
from tests.helpers import one_error_line
from tests.odoo_data import filestore_digest, store_file, table_checksums

MiB = 1 << 20


def _state(dsn, filestore):
    with psycopg.connect(dsn) as conn:
        return table_checksums(conn), filestore_digest(filestore)


def _free(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(path, leave: int) -> None:
    """A filler file that leaves about `leave` bytes free on `path`'s file system."""
    with (path / "filler").open("wb") as f:
        f.write(b"\0" * max(0, _free(path) - leave))


def _random_attachments(dsn, filestore, sizes) -> None:
    """Attachments of random bytes: they take on the repository's disk what they take here."""
    with psycopg.connect(dsn) as conn:
        for size in sizes:
            store_fname, checksum = store_file(filestore, os.urandom(size))
            conn.execute(
                "INSERT INTO ir_attachment (name, res_model, res_id, store_fname, checksum,"
                " file_size) VALUES ('big.bin', 'res.partner', 1, %s, %s, %s)",
                [store_fname, checksum, size],
            )
        conn.commit()


def test_a_full_repository_disk_fails_cleanly_and_loses_nothing(
    postgres, odoo, small_filesystems, tmp_path
):
    name, dsn, filestore = odoo
    env = env_for(postgres, None)
    mount = small_filesystems.mount("48m")
    repo = mount / "repo"
    run = ["run", "--repo", str(repo), "--db", name, "--filestore", str(filestore)]
    backup_ok(env, "init", "--repo", str(repo))
    backup_ok(env, *run)
    [first] = json.loads(backup_ok(env, "list", "--repo", str(repo), "--json"))
    at_first = _state(dsn, filestore)
    _fill(mount, leave=4 * MiB)
    _random_attachments(dsn, filestore, [3 * MiB, 2 * MiB, 3 * MiB])  # more than is free

    result = backup(env, *run)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "No space left on device" in line and "the repository's disk is full" in line, line
    store = LocalStore(repo)
    assert list(store.temp_files()) == [] and list(store.list("locks")) == []
    assert [s["id"] for s in json.loads(backup_ok(env, "list", "--repo", str(repo), "--json"))] == [
        first["id"]
    ]
    report = json.loads(backup_ok(env, "verify", "--repo", str(repo), "--read-data", "--json"))
    assert report["ok"] and report["temp_files"] == 0 and report["objects"]["unreferenced"] > 0
    restored = tmp_path / "restored" / "filestore"
    backup_ok(env, "restore", "--repo", str(repo), first["id"], "--db", f"{name}_first",
              "--filestore", str(restored))  # fmt: skip
    assert _state(dsn.replace(f"dbname={name}", f"dbname={name}_first"), restored) == at_first

    # Free space: prune deletes what the failed run stored, then the filler goes.
    out = json.loads(backup_ok(env, "prune", "--repo", str(repo), "--keep-last", "1", "--json"))
    assert out["forgotten"] == [] and out["objects_deleted"] == report["objects"]["unreferenced"]
    (mount / "filler").unlink()
    at_second = _state(dsn, filestore)
    backup_ok(env, *run)
    listed = json.loads(backup_ok(env, "list", "--repo", str(repo), "--json"))
    assert [s["id"] for s in listed][:1] == [first["id"]] and len(listed) == 2
    report = json.loads(backup_ok(env, "verify", "--repo", str(repo), "--read-data", "--json"))
    assert report["ok"] and report["objects"]["unreferenced"] == 0
    backup_ok(env, "restore", "--repo", str(repo), "latest", "--db", f"{name}_second",
              "--filestore", str(tmp_path / "second" / "filestore"))  # fmt: skip
    assert _state(dsn.replace(f"dbname={name}", f"dbname={name}_second"),
                  tmp_path / "second" / "filestore") == at_second  # fmt: skip


def _restore_onto_a_full_disk(postgres, odoo, small_filesystems, tmp_path):
    """Restore a snapshot where the live filestore sits on a disk that holds it but not a
    second copy of it; the result, and what must be as it was."""
    name, dsn, filestore = odoo
    env = env_for(postgres, None)
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_ok(env, "run", "--repo", repo, "--db", name, "--filestore", str(filestore))
    size = sum(p.stat().st_size for p in filestore.rglob("*") if p.is_file())
    mount = small_filesystems.mount(f"{(size * 3 // 2 + 4096 * 64) // 1024}k")
    live = mount / "filestore"
    shutil.copytree(filestore, live)
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE res_partner SET city = 'after the backup'")
        conn.commit()
    before = _state(dsn, live)
    log = tmp_path / "service.log"
    result = backup(env, "restore", "--repo", repo, "latest", "--db", name, "--filestore",
                    str(live), "--odoo-stop", f"sh -c 'echo stop >> {log}'",
                    "--odoo-start", f"sh -c 'echo start >> {log}'")  # fmt: skip
    return result, mount, before, log


def test_a_full_disk_under_the_restored_filestore_stops_before_the_swap(
    postgres, odoo, small_filesystems, tmp_path
):
    name, dsn, _ = odoo
    result, mount, before, log = _restore_onto_a_full_disk(
        postgres, odoo, small_filesystems, tmp_path
    )
    assert result.returncode == 1
    assert "No space left on device" in one_error_line(result)
    assert not log.exists()  # Odoo was never stopped: the failure came before the swap
    assert _state(dsn, mount / "filestore") == before
    assert sorted(p.name for p in mount.iterdir()) == ["filestore"]  # the new folder is gone
    made = postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}_%'")
    assert made == ""  # and so is the new database


def test_a_full_disk_under_the_restored_filestore_is_named_in_the_line(
    postgres, odoo, small_filesystems, tmp_path
):
    result, mount, _, _ = _restore_onto_a_full_disk(postgres, odoo, small_filesystems, tmp_path)
    line = one_error_line(result)
    assert "No space left on device" in line and str(mount) in line, line
    assert "unexpected" not in line, f"a full disk is no surprise: {line}"
