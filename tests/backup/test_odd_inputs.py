"""Bombs, odd names and odd places, each handled with one line: a zip whose manifest.json
inflates to hundreds of MiB, a database name long enough that PostgreSQL cuts its kept
copies' names, a filestore that is a mount point, manifest fields of the wrong type, a file
name that is not UTF-8; export zips readable by their owner only; and Odoo failing to start
after a swap that worked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.backup.helpers import (
    ODBOX_BACKUP,
    backup,
    backup_ok,
    backup_run,
    db_dsn,
    make_odoo,
    odoo_state,
    snapshot_then_change,
)
from tests.helpers import one_error_line
from tests.odoo_data import Shape


def _peak_rss_mb(env, *args):
    """Run `odbox-backup ARGS` in a process of its own; (result, its peak RSS in MB)."""
    probe = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(f'{done.returncode}\\n{resource.getrusage(resource.RUSAGE_CHILDREN)"
        ".ru_maxrss}\\n' + done.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(ODBOX_BACKUP), *args], env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    code, rss, stderr = out.split("\n", 2)
    return int(code), int(rss) / 1024, stderr


def test_a_zip_bomb_in_manifest_json_is_refused_without_reading_it(local_env, tmp_path):
    """A 1.5 MB zip holding a 1.5 GB manifest.json peaked at 3 GB in import; here 256 MiB
    of it (a few hundred KiB zipped) must not be read whole."""
    env = local_env
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dump.sql", "SELECT 1;\n")
        with zf.open("manifest.json", "w", force_zip64=True) as f:
            block = b" " * (1 << 20)
            for _ in range(256):
                f.write(block)
    assert bomb.stat().st_size < 2 << 20
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    code, peak, stderr = _peak_rss_mb(env, "import", "--repo", repo, str(bomb))
    assert code == 1 and "more than 1 MiB" in stderr and "Traceback" not in stderr
    assert peak < 150, f"import peaked at {peak:.0f} MB"
    assert json.loads(backup_ok(env, "list", "--repo", repo, "--json")) == []


def _zip_with_manifest(path, manifest):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("dump.sql", "SELECT 1;\n")
        zf.writestr("manifest.json", json.dumps(manifest))


def test_a_manifest_field_of_the_wrong_type_is_one_line(local_env, tmp_path):
    """`"modules": ["base"]` was `unexpected TypeError`."""
    env = local_env
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    for bad, field in [({"modules": ["base"]}, "'modules'"), ({"db_name": 5}, "'db_name'"),
                       ({"modules": {"base": 17}}, "'modules'")]:  # fmt: skip
        archive = tmp_path / "odd.zip"
        _zip_with_manifest(archive, {"odoo_dump": "1", **bad})
        result = backup(env, "import", "--repo", repo, str(archive))
        line = one_error_line(result)
        assert result.returncode == 1 and field in line and "unexpected" not in line, line
    assert json.loads(backup_ok(env, "list", "--repo", repo, "--json")) == []


def test_a_long_database_name_keeps_its_copies_apart_and_restores_twice(
    postgres, local_env, tmp_path
):
    """A 51-character name: `<db>_before_<time>` passes 63 bytes and PostgreSQL cut off the
    time; the next restore waited forever for a name that never came free."""
    env = local_env
    name = "odoo_a_very_long_company_database_name_for_a_test_x"
    assert len(name) == 51
    filestore = tmp_path / "live" / "filestore"
    dsn = make_odoo(postgres, name, filestore, Shape.small(), seed=3)
    try:
        repo = str(tmp_path / "repo")
        backup_ok(env, "init", "--repo", repo)
        backup_ok(env, "run", "--repo", repo, "--db", name, "--filestore", str(filestore))
        at_backup = odoo_state(dsn, filestore)
        restore = ["restore", "--repo", repo, "latest", "--db", name, "--filestore",
                   str(filestore)]  # fmt: skip
        for _ in range(2):
            result = backup(env, *restore, timeout=300)
            assert result.returncode == 0, result.stderr
        assert odoo_state(dsn, filestore) == at_backup
        kept = postgres.psql(
            "SELECT datname FROM pg_database WHERE datname LIKE 'odoo_a_very%' AND datname <> "
            f"'{name}'"
        ).splitlines()
        assert len(kept) == 2 and all(len(k.encode()) <= 63 and "_before_2" in k for k in kept)
        out = backup_ok(env, "drop-previous", "--db", name, "--filestore", str(filestore))
        assert all(f"dropped database {k}" in out for k in kept)
    finally:
        for db in postgres.psql(
            "SELECT datname FROM pg_database WHERE datname LIKE 'odoo_a_very%'"
        ).splitlines():
            postgres.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_a_filestore_that_is_a_mount_point_is_refused_before_anything_is_written(
    odoo, local_env, tmp_path, small_filesystems, postgres
):
    """It was restored onto the parent's file system, then the swap failed with EBUSY and
    left its copies."""
    env = local_env
    name, dsn, _ = odoo
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_run(env, repo, odoo)
    mount = small_filesystems.mount("16m")
    (mount / "kept.txt").write_text("the live filestore\n")
    before = odoo_state(dsn, mount)
    result = backup(env, "restore", "--repo", repo, "latest", "--db", name, "--filestore",
                    str(mount))  # fmt: skip
    assert result.returncode == 1
    line = one_error_line(result)
    assert "mount point" in line and "nothing was changed" in line
    assert odoo_state(dsn, mount) == before
    assert not list(mount.parent.glob(f"{mount.name}.*"))
    assert postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}%'") == name


def test_an_export_zip_is_readable_by_its_owner_only(odoo, local_env, tmp_path):
    env = local_env
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_run(env, repo, odoo)
    out = tmp_path / "odoo.zip"
    os.umask(0o022)
    backup_ok(env, "export", "--repo", repo, "latest", "--odoo-zip", str(out))
    assert out.stat().st_mode & 0o777 == 0o600


def test_export_of_a_file_name_that_is_not_utf8_is_one_line(odoo, local_env, tmp_path):
    """A file named b'\\xff\\xfe.bin' in the filestore made export fail with
    `unexpected UnicodeEncodeError`."""
    env = local_env
    filestore = odoo[2]
    (filestore / "ab").mkdir(exist_ok=True)
    Path(os.fsdecode(os.fsencode(filestore) + b"/ab/\xff\xfe.bin")).write_bytes(b"not Odoo's\n")
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_run(env, repo, odoo)
    out = tmp_path / "odoo.zip"
    result = backup(env, "export", "--repo", repo, "latest", "--odoo-zip", str(out))
    line = one_error_line(result)
    assert result.returncode == 1 and "not UTF-8" in line and "unexpected" not in line
    assert not out.exists() and not list(tmp_path.glob(".odoo.zip.tmp-*"))


def test_when_odoo_does_not_start_after_the_swap_the_error_says_the_data_was_swapped(
    postgres, odoo, local_env, tmp_path
):
    env = local_env
    name, dsn, filestore = odoo
    repo, at_backup, _ = snapshot_then_change(env, tmp_path, odoo)
    result = backup(env, "restore", "--repo", repo, "latest", "--db", name, "--filestore",
                    str(filestore), "--odoo-stop", "true", "--odoo-start",
                    "sh -c 'echo odoo.service failed >&2; exit 1'")  # fmt: skip
    assert result.returncode == 1
    line = one_error_line(result)
    [kept_db] = postgres.psql(
        f"SELECT datname FROM pg_database WHERE datname LIKE '{name}_before_%'"
    ).splitlines()
    [kept_folder] = filestore.parent.glob("filestore.before-*")
    assert "swapped the data in" in line and "Odoo did not start" in line
    assert kept_db in line and str(kept_folder) in line and "odoo.service failed" in line
    assert odoo_state(dsn, filestore) == at_backup
    assert not Path(filestore.parent, ".filestore.restore-journal").exists()
    assert odoo_state(db_dsn(postgres, kept_db), kept_folder) != at_backup
