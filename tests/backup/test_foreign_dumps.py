"""Dumps from another server: restored without their grants, and never able to get out.

An Odoo zip (`import`) is untrusted input: its `dump.sql` is loaded by
odbox_backup.sqlload as the owner role, never by psql and never as a superuser.
Each payload below ran as root or as postgres before (psql with a superuser
session and `SET ROLE`): a shell command, a switch to database `postgres`, a
superuser role, a program run by the server.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import zipfile

import psycopg
import pytest

from odbox_backup.sqlload import HostileDump, Lexer
from tests.backup.helpers import backup, backup_ok, backup_run, db_dsn, odoo_state
from tests.helpers import one_error_line
from tests.odoo_data import MODULES


def _only_snapshot(env: dict[str, str], repo: str) -> str:
    """The ID of the repository's one snapshot: a restore into another database's name by
    `latest` warns that it holds none of that database, a second line on stderr."""
    (snapshot,) = json.loads(backup_ok(env, "list", "--repo", repo, "--json"))
    return str(snapshot["id"])


def _dump(postgres, db):
    """What Odoo's dump_db writes as dump.sql: pg_dump --no-owner, plain SQL."""
    return subprocess.run([postgres.bindir / "pg_dump", "--no-owner", "-d", db_dsn(postgres, db)],
                          env=postgres.env, check=True, capture_output=True).stdout  # fmt: skip


def _zip(out, dump, filestore=None):
    manifest = {"odoo_dump": "1", "db_name": "foreign", "version": "17.0",
                "version_info": [17, 0, 0, "final", 0, ""], "major_version": "17.0",
                "pg_version": "15", "modules": dict(MODULES)}  # fmt: skip
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dump.sql", dump)
        for path in sorted(filestore.rglob("*")) if filestore else []:
            if path.is_file():
                zf.write(path, f"filestore/{path.relative_to(filestore).as_posix()}")
        zf.writestr("manifest.json", json.dumps(manifest))


def _statements(text, block=1 << 20):
    import odbox_backup.sqlload as sqlload

    saved, sqlload.BLOCK = sqlload.BLOCK, block
    try:
        lexer = Lexer(io.BytesIO(text.encode()))
        out = []
        for statement in lexer.statements():
            rows = b"".join(lexer.copy_rows()).decode() if statement.copy_in else None
            out.append((statement.text.decode().strip(), rows))
        return out
    finally:
        sqlload.BLOCK = saved


TRICKY = """--
-- PostgreSQL database dump
--

\\restrict abc123

SET a = 'it''s; fine';
CREATE FUNCTION f() RETURNS text AS $body$ SELECT ';' $x$ ; \\! no $body$ LANGUAGE sql;
SELECT E'a\\';b', "we;ird" /* c /* nested ; \\! */ ; */ FROM (SELECT 1; ) x;
COPY public.t (a) FROM stdin;
1\\;2
\\! not a command in COPY rows
\\.
SELECT a$b$c FROM t;
-- the end

\\unrestrict abc123
"""


def test_the_lexer_follows_quotes_comments_and_copy_rows_at_any_block_size():
    expected = [
        ("SET a = 'it''s; fine';", None),
        ("CREATE FUNCTION f() RETURNS text AS $body$ SELECT ';' $x$ ; \\! no $body$ LANGUAGE sql;",
         None),
        ("SELECT E'a\\';b', \"we;ird\" /* c /* nested ; \\! */ ; */ FROM (SELECT 1; ) x;", None),
        ("COPY public.t (a) FROM stdin;", "1\\;2\n\\! not a command in COPY rows\n"),
        ("SELECT a$b$c FROM t;", None),
    ]  # fmt: skip
    for block in (1, 2, 3, 7, 64, 1 << 20):
        assert _statements(TRICKY, block) == expected, block


PAYLOADS = {
    "shell": "\\! touch {marker}\n",
    "shell after a statement": "SELECT 1 \\! touch {marker}\n;\n",
    "connect to postgres": "\\c postgres\nCREATE TABLE pwned (a int);\n",
    "reset role": "RESET ROLE;\nCREATE ROLE evil SUPERUSER;\n",
    "session authorization": "SET SESSION AUTHORIZATION postgres;\nCREATE ROLE evil SUPERUSER;\n",
    "copy to program": "COPY (SELECT 1) TO PROGRAM 'touch {marker}';\n",
    "superuser role": "CREATE ROLE evil SUPERUSER;\n",
    "copy from a server file": "COPY res_partner FROM '/etc/passwd';\n",
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_the_lexer_refuses_each_payload(payload, tmp_path):
    with pytest.raises(HostileDump, match="refused"):
        _statements(PAYLOADS[payload].format(marker=tmp_path / "x"))


# What gets past the lexer still runs as the owner only: the server refuses it.
PAST_THE_LEXER = {
    **PAYLOADS,
    "dynamic SQL": "DO $$ BEGIN EXECUTE 'RESET ROLE'; EXECUTE 'CREATE ROLE evil SUPERUSER';"
    " END $$;\n",
    "set_config role": "SELECT set_config('role', 'postgres', false);\n"
    "DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}'''; END $$;\n",
    "program from a function": "DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM "
    "''touch {marker}'''; END $$;\n",
}


@pytest.mark.parametrize("payload", sorted(PAST_THE_LEXER))
def test_an_imported_zip_with_a_hostile_dump_is_refused_and_nothing_gets_out(
    postgres, odoo, local_env, tmp_path, owner_role, payload
):
    """Restore of `import`ed zips whose dump.sql, a real Odoo dump, carries a payload in the
    middle (after the first table's rows): exit 1, one line, and no shell command run, no
    role made, nothing written into postgres; the live database never touched."""
    env = local_env
    name, _, filestore = odoo
    marker = tmp_path / "x"
    # pg_dump before 15.14 (most zips in the wild) writes no \restrict line, which would
    # make psql itself refuse backslash commands
    dump = "".join(line for line in _dump(postgres, name).decode().splitlines(keepends=True)
                   if not line.startswith(("\\restrict", "\\unrestrict")))  # fmt: skip
    cut = dump.index("\\.\n", dump.index("FROM stdin;")) + 3
    hostile = dump[:cut] + PAST_THE_LEXER[payload].format(marker=marker) + dump[cut:]
    archive = tmp_path / "foreign.zip"
    _zip(archive, hostile, filestore)
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_ok(env, "import", "--repo", repo, str(archive), "--db-name", name)
    postgres.psql(f"CREATE DATABASE {name}_box OWNER {owner_role}")
    live_files = tmp_path / "box" / "filestore"
    live_files.mkdir(parents=True)

    snapshot = _only_snapshot(env, repo)
    result = backup(env, "restore", "--repo", repo, snapshot, "--db", f"{name}_box",
                    "--filestore", str(live_files))  # fmt: skip
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert "nothing was swapped" in line
    assert not marker.exists()
    assert postgres.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'evil'") == "0"
    assert postgres.psql("SELECT to_regclass('public.pwned') IS NULL") == "t"
    assert postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}_box%'") == (
        f"{name}_box"
    )
    assert postgres.psql("SELECT count(*) FROM pg_class WHERE relnamespace = 2200",
                         db=f"{name}_box") == "0"  # fmt: skip
    assert list(live_files.parent.iterdir()) == [live_files]


def test_an_imported_dump_is_never_loaded_as_a_superuser(postgres, odoo, local_env, tmp_path):
    env = local_env
    name, _, filestore = odoo
    archive = tmp_path / "odoo.zip"
    _zip(archive, _dump(postgres, name), filestore)
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_ok(env, "import", "--repo", repo, str(archive))
    snapshot = _only_snapshot(env, repo)
    result = backup(env, "restore", "--repo", repo, snapshot, "--db", f"{name}_new",
                    "--filestore", str(tmp_path / "new"), "--owner", "postgres")  # fmt: skip
    assert result.returncode == 1
    line = one_error_line(result)
    assert "superuser" in line and "--owner" in line
    assert (
        postgres.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{name}_new%'") == "0"
    )


def _grant_to_a_role_the_box_lacks(postgres, db):
    postgres.psql("CREATE ROLE bi_reader")
    postgres.psql("GRANT SELECT ON res_partner TO bi_reader", db=db)


def _drop_the_role(postgres, db):
    postgres.psql("DROP OWNED BY bi_reader", db=db)
    postgres.psql("DROP ROLE bi_reader")


def _box_database(postgres, db, owner):
    """The box's database as dbinit leaves it: owned by the odoo role, whose new tables a
    second role (pgadmin's handyman) may read by default privileges."""
    if not postgres.psql("SELECT 1 FROM pg_roles WHERE rolname = 'odoo_reader'"):
        postgres.psql("CREATE ROLE odoo_reader")
    postgres.psql(f"CREATE DATABASE {db} OWNER {owner}")
    postgres.psql(
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT SELECT ON TABLES TO odoo_reader", db=db
    )


def test_an_odoo_zip_that_grants_to_a_role_the_box_lacks_restores_with_the_boxs_grants(
    postgres, odoo, local_env, tmp_path, owner_role
):
    """`GRANT SELECT ON res_partner TO bi_reader` in dump.sql failed the whole restore
    (`role "bi_reader" does not exist`); Odoo's own restore accepts it."""
    env = local_env
    name, dsn, filestore = odoo
    _grant_to_a_role_the_box_lacks(postgres, name)
    dump = _dump(postgres, name)
    assert b"TO bi_reader" in dump
    _drop_the_role(postgres, name)
    source = odoo_state(dsn, filestore)
    archive = tmp_path / "odoo.zip"
    _zip(archive, dump, filestore)
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_ok(env, "import", "--repo", repo, str(archive))
    box = f"{name}_box"
    _box_database(postgres, box, owner_role)
    restored = tmp_path / "box" / "filestore"

    backup_ok(env, "restore", "--repo", repo, "latest", "--db", box, "--filestore", str(restored))
    assert odoo_state(db_dsn(postgres, box), restored) == source
    assert postgres.psql("SELECT has_table_privilege('odoo_reader', 'public.res_partner',"
                         " 'SELECT')", db=box) == "t"  # fmt: skip
    assert postgres.psql("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
                         " WHERE relnamespace = 2200", db=box) == owner_role  # fmt: skip


def test_a_snapshot_that_grants_to_a_role_the_box_lacks_restores(
    postgres, odoo, local_env, tmp_path
):
    """A custom dump with the grant (a k8s-migrate pull, a snapshot of another box) failed
    under pg_restore --exit-on-error; it restores without the source's privileges."""
    env = local_env
    name, dsn, filestore = odoo
    _grant_to_a_role_the_box_lacks(postgres, name)
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_run(env, repo, odoo)
    at_backup = odoo_state(dsn, filestore)
    _drop_the_role(postgres, name)
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE res_partner SET city = 'after the backup'")

    backup_ok(env, "restore", "--repo", repo, "latest", "--db", name, "--filestore", str(filestore))
    assert odoo_state(dsn, filestore) == at_backup


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the load as another OS user: needs root")
def test_an_owner_the_dsn_cannot_reach_is_tried_as_its_os_user_and_fails_in_one_line(
    postgres, odoo, local_env, tmp_path
):
    """Run as root, where peer authentication lets root in only as postgres, the load runs as
    the OS user of the owner's name. Here that role may not log in at all: one line, and
    nothing is left (whether the OS user could not run the loader or was refused)."""
    env = local_env
    name, _, filestore = odoo
    made = not postgres.psql("SELECT 1 FROM pg_roles WHERE rolname = 'nobody'")
    if made:
        postgres.psql("CREATE ROLE nobody NOLOGIN")
    try:
        archive = tmp_path / "odoo.zip"
        _zip(archive, _dump(postgres, name), filestore)
        repo = str(tmp_path / "repo")
        backup_ok(env, "init", "--repo", repo)
        backup_ok(env, "import", "--repo", repo, str(archive))
        new = tmp_path / "new" / "filestore"
        result = backup(env, "restore", "--repo", repo, _only_snapshot(env, repo), "--db",
                        f"{name}_new", "--filestore", str(new), "--owner", "nobody")  # fmt: skip
        assert result.returncode == 1
        line = one_error_line(result)
        assert "nothing was swapped" in line and ("OS user nobody" in line or "log in" in line)
        assert (
            postgres.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{name}_new%'")
            == "0"
        )
        assert not list((tmp_path / "new").glob("*"))
    finally:
        if made:  # the session's cluster is shared: k8s-migrate's tests ask for a role nobody
            postgres.psql("DROP ROLE nobody")
