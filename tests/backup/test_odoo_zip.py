"""`export --odoo-zip` writes what Odoo's database manager restores; `import` reads Odoo's zips.

The zip `import` reads is built here independently, the way Odoo's
`dump_db` builds it: `pg_dump --no-owner` to `dump.sql`, the filestore under
`filestore/`, and `manifest.json` with Odoo's keys.
"""

from __future__ import annotations

import json
import subprocess
import zipfile

import psycopg
import pytest

from tests.backup.helpers import backup, backup_ok, backup_run, db_dsn, odoo_state, show
from tests.helpers import one_error_line
from tests.odoo_data import MODULES, filestore_digest, table_checksums

ODOO_KEYS = {"odoo_dump", "db_name", "version", "version_info", "major_version", "pg_version",
             "modules"}  # fmt: skip


def test_export_writes_a_zip_psql_restores_into_an_empty_database(
    postgres, odoo, backend, env, tmp_path
):
    name, dsn, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    at_backup = odoo_state(dsn, filestore)
    out = tmp_path / "odoo.zip"
    said = backup_ok(env, "export", "--repo", backend, "latest", "--odoo-zip", str(out))
    assert str(out) in said

    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        unpacked = tmp_path / "unpacked"
        zf.extractall(unpacked)
    assert {"dump.sql", "manifest.json"} <= names
    assert set(manifest) == ODOO_KEYS
    assert manifest["odoo_dump"] == "1" and manifest["db_name"] == name
    assert manifest["version"] == "17.0" and manifest["major_version"] == "17.0"
    assert manifest["version_info"][:2] == [17, 0]
    assert manifest["modules"]["base"] == "17.0.1.3"
    assert manifest["pg_version"] == postgres.psql("SHOW server_version").split()[0]
    assert filestore_digest(unpacked / "filestore") == at_backup[1]

    postgres.psql(f"CREATE DATABASE {name}_fromzip")
    subprocess.run([postgres.bindir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                    db_dsn(postgres, f"{name}_fromzip"), "-f", str(unpacked / "dump.sql")],
                   env=postgres.env, check=True, capture_output=True)  # fmt: skip
    with psycopg.connect(db_dsn(postgres, f"{name}_fromzip")) as conn:
        assert table_checksums(conn) == at_backup[0]

    again = backup(env, "export", "--repo", backend, "latest", "--odoo-zip", str(out))
    assert again.returncode == 2 and "exists" in one_error_line(again)
    assert not list(tmp_path.glob(".odoo.zip.tmp-*"))


def _odoo_zip(postgres, db, filestore, out):
    """An Odoo backup zip made as Odoo's `dump_db` makes it, without odbox-backup."""
    dump = subprocess.run([postgres.bindir / "pg_dump", "--no-owner", "-d", db_dsn(postgres, db)],
                          env=postgres.env, check=True, capture_output=True).stdout  # fmt: skip
    pg_version = postgres.psql("SHOW server_version").split()[0]
    manifest = {"odoo_dump": "1", "db_name": db, "version": "17.0",
                "version_info": [17, 0, 0, "final", 0, ""], "major_version": "17.0",
                "pg_version": pg_version, "modules": dict(MODULES)}  # fmt: skip
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dump.sql", dump)
        for path in sorted(filestore.rglob("*")):
            if path.is_file():
                zf.write(path, f"filestore/{path.relative_to(filestore).as_posix()}")
        zf.writestr("manifest.json", json.dumps(manifest, indent=4))


@pytest.mark.parametrize("layout", ["zip", "folder"])
def test_import_of_an_odoo_backup_gives_a_snapshot_that_restores(
    postgres, odoo, backend, env, tmp_path, layout, owner_role
):
    name, dsn, filestore = odoo
    source = odoo_state(dsn, filestore)
    archive = tmp_path / "odoo-backup.zip"
    _odoo_zip(postgres, name, filestore, archive)
    if layout == "folder":  # the seed's way: a plain SQL dump and an rsync'd filestore
        folder = tmp_path / "seed-backup"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(folder)
        (folder / "dump.sql").rename(folder / f"{name}.sql")
        (folder / "manifest.json").unlink()
        archive = folder
    backup_ok(env, "init", "--repo", backend)
    out = backup_ok(env, "import", "--repo", backend, str(archive), "--db-name", name)
    assert "imported" in out
    manifest = show(env, backend, "latest")
    assert manifest["source"] == "import" and manifest["database"]["format"] == "sql"
    assert manifest["tags"] == ["import"]
    assert manifest["database"]["name"] == name
    if layout == "zip":
        assert manifest["odoo"] == {"version": "17.0", "modules": dict(MODULES)}

    restored = tmp_path / "restored" / "filestore"
    backup_ok(env, "restore", "--repo", backend, "latest", "--db", f"{name}_imported",
              "--filestore", str(restored), "--owner", owner_role)  # fmt: skip
    assert odoo_state(db_dsn(postgres, f"{name}_imported"), restored) == source
    owners = postgres.psql("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN"
                           " pg_namespace n ON n.oid = relnamespace WHERE nspname = 'public'",
                           db=f"{name}_imported")  # fmt: skip
    assert owners == owner_role
    code = backup(env, "verify", "--repo", backend, "--read-data").returncode
    assert code == 0
    # `ls` finds the imported files, and names them from the names object the import made
    listed = json.loads(backup_ok(env, "ls", "--repo", backend, "latest", "--json"))
    assert {e["path"] for e in listed} == set(source[1])
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT count(*) FROM ir_attachment WHERE store_fname <> ''")
        assert sum(len(e["attachments"]) for e in listed) == rows.fetchone()[0] > 0  # type: ignore[index]
    assert manifest["filestore"]["names"]["rows"] == sum(len(e["attachments"]) for e in listed)


def test_import_of_a_damaged_zip_writes_no_snapshot(postgres, odoo, backend, env, tmp_path):
    name, _, filestore = odoo
    archive = tmp_path / "odoo.zip"
    _odoo_zip(postgres, name, filestore, archive)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("dump.sql")
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[middle] ^= 0xFF
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    backup_ok(env, "init", "--repo", backend)
    for bad, words in [(damaged, "damaged"), (tmp_path / "none.zip", "does not exist"),
                       (tmp_path / "dump.sql", "not a readable zip")]:  # fmt: skip
        if bad.name == "dump.sql":
            bad.write_text("SELECT 1;\n")
        result = backup(env, "import", "--repo", backend, str(bad))
        assert result.returncode in (1, 2), result.stderr
        assert words in one_error_line(result)
    assert json.loads(backup_ok(env, "list", "--repo", backend, "--json")) == []


def test_export_refuses_a_missing_object_and_leaves_no_file(odoo, backend, env, tmp_path, request):
    from tests.backup.conftest import moto_for
    from tests.backup.helpers import store_for

    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    victim = show(env, backend, "latest")["database"]["objects"][0]
    store_for(backend, moto_for(backend, request)).delete(f"objects/{victim[:2]}/{victim}")
    out = tmp_path / "odoo.zip"
    result = backup(env, "export", "--repo", backend, "latest", "--odoo-zip", str(out))
    assert result.returncode == 1 and "missing" in one_error_line(result)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if "zip" in p.name] == []
