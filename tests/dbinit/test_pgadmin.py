"""`dbinit pgadmin-boot` with the real pgAdmin (dependency group `pgadmin`) on the test cluster."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.dbinit.helpers import DBINIT, clean_env, dbinit, dbinit_ok, one_error_line, query

PGADMIN_CLI = Path(sys.executable).with_name("pgadmin4-cli")
EMAIL = "admin@example.com"


@pytest.fixture(scope="module")
def box(cluster, tmp_path_factory):
    dbinit_ok(cluster, "setup")
    folder = tmp_path_factory.mktemp("pgadmin")
    (folder / "password.txt").write_text("correct horse battery staple\n")
    return cluster, folder


def boot(cluster, folder: Path, *extra: str, **kw):
    uri = f"postgresql://pgadmin@/pgadmin?host={cluster.socket_dir}&port={cluster.port}"
    return dbinit(
        None,
        "pgadmin-boot", "--email", EMAIL, "--password-file", str(folder / "password.txt"),
        "--db-uri", uri, "--data-dir", str(folder / "data"), "--pgadmin-cli", str(PGADMIN_CLI),
        *extra, **kw,
    )  # fmt: skip


def pgadmin_data(cluster) -> dict[str, object]:
    """Every row of every table pgAdmin made, so a second run can be shown to change nothing."""
    tables = [
        r[0]
        for r in query(
            cluster,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            "pgadmin",
        )
    ]
    return {
        t: query(
            cluster,
            f"SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM \"{t}\" x",
            "pgadmin",
        )
        for t in tables
    }


def local_server(cluster) -> list[tuple[object, ...]]:
    return query(
        cluster,
        "SELECT s.name, s.host, s.port, s.maintenance_db, s.username, u.email"
        ' FROM server s JOIN "user" u ON u.id = s.user_id',
        "pgadmin",
    )


def test_boot_lets_pgadmin_make_its_tables_and_points_local_at_the_socket(box):
    cluster, folder = box
    result = boot(cluster, folder)
    assert result.returncode == 0, result.stderr
    assert "added pgAdmin server 'local'" in result.stdout
    tables = {r[0] for r in query(cluster, "SELECT tablename FROM pg_tables"
                                           " WHERE schemaname = 'public'", "pgadmin")}  # fmt: skip
    assert {"user", "server", "servergroup", "version", "alembic_version"} <= tables
    owners = {r[0] for r in query(cluster, "SELECT DISTINCT tableowner FROM pg_tables"
                                           " WHERE schemaname = 'public'", "pgadmin")}  # fmt: skip
    assert owners == {"pgadmin"}
    assert local_server(cluster) == [
        ("local", str(cluster.socket_dir), cluster.port, "odoo", "pgadmin", EMAIL)
    ]
    [(password_hash,)] = query(cluster, 'SELECT password FROM "user"', "pgadmin")
    assert "correct horse" not in password_hash


def test_a_second_boot_changes_nothing(box):
    cluster, folder = box
    if not local_server(cluster):
        assert boot(cluster, folder).returncode == 0
    before = pgadmin_data(cluster)
    result = boot(cluster, folder)
    assert result.returncode == 0, result.stderr
    assert "already points at" in result.stdout
    assert pgadmin_data(cluster) == before


def test_boot_puts_back_a_local_server_that_drifted(box):
    cluster, folder = box
    if not local_server(cluster):
        assert boot(cluster, folder).returncode == 0
    query(cluster, "UPDATE server SET host = '/var/run/elsewhere', port = 6543", "pgadmin")
    result = boot(cluster, folder)
    assert result.returncode == 0, result.stderr
    assert "was /var/run/elsewhere port 6543" in result.stdout
    assert local_server(cluster)[0][1:3] == (str(cluster.socket_dir), cluster.port)


def test_boot_json_is_one_document_naming_the_server_and_what_changed_its_lines_on_stderr(box):
    cluster, folder = box
    if not local_server(cluster):
        assert boot(cluster, folder).returncode == 0
    query(cluster, "UPDATE server SET port = 6543", "pgadmin")
    documents = []
    for _ in range(2):  # the drift put back, then nothing to do
        result = boot(cluster, folder, "--json")
        assert result.returncode == 0, result.stderr
        documents.append(json.loads(result.stdout))  # the whole of stdout: one document
        assert "running pgAdmin's setup-db" in result.stderr and "error:" not in result.stderr
    fixed, again = documents
    local = {"name": "local", "host": str(cluster.socket_dir), "port": cluster.port,
             "maintenance_db": "odoo", "username": "pgadmin"}  # fmt: skip
    assert fixed == {
        "schema": 1, "server": fixed["server"], "database": "pgadmin", "email": EMAIL,
        "pgadmin_server": local, "changed": True, "changes": fixed["changes"],
    }  # fmt: skip
    assert str(cluster.socket_dir) in fixed["server"]
    assert len(fixed["changes"]) == 1 and "(was " in fixed["changes"][0]
    assert fixed["changes"][0].endswith("port 6543, database odoo, role pgadmin)")
    assert again == {**fixed, "changed": False, "changes": []}


def test_a_short_password_is_refused_before_pgadmin_is_called(box, tmp_path):
    cluster, folder = box
    (folder / "short.txt").write_text("abc12\n")
    marker = tmp_path / "called"
    fake = tmp_path / "pgadmin4-cli"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(0o755)
    before = pgadmin_data(cluster)
    uri = f"postgresql://pgadmin@/pgadmin?host={cluster.socket_dir}&port={cluster.port}"
    import subprocess

    result = subprocess.run(
        [DBINIT, "pgadmin-boot", "--email", EMAIL, "--password-file", folder / "short.txt",
         "--db-uri", uri, "--pgadmin-cli", fake],
        capture_output=True, text=True, env=clean_env(),
    )  # fmt: skip
    assert result.returncode == 2
    line = one_error_line(result)
    assert "has 5 characters, but pgAdmin needs at least 6" in line
    assert not marker.exists()
    assert pgadmin_data(cluster) == before


def test_boot_before_setup_says_to_run_setup(box):
    cluster, folder = box
    uri = f"postgresql://postgres@/postgres?host={cluster.socket_dir}&port={cluster.port}"
    result = dbinit(
        None, "pgadmin-boot", "--email", EMAIL, "--password-file", str(folder / "password.txt"),
        "--db-uri", uri, "--pgadmin-cli", str(PGADMIN_CLI),
    )  # fmt: skip
    assert result.returncode == 1
    assert "run `dbinit setup` first" in one_error_line(result)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--email", "not-an-address"], "is not an e-mail address"),
        (["--db-uri", "mysql://x@/y"], "is not a PostgreSQL URI"),
        (["--pgadmin-cli", "no-such-pgadmin"], "was not found"),
        (["--password-file", "/nonexistent/pw"], "cannot read the pgAdmin password file"),
        (["--db-uri", "postgresql://pgadmin:hunter22@/pgadmin"], "holds a password"),
        (["--db-uri", "postgresql:///pgadmin"], "names no role"),
    ],
)
def test_bad_input_is_one_clear_line(box, args, message):
    cluster, folder = box
    base = {
        "--email": EMAIL,
        "--password-file": str(folder / "password.txt"),
        "--db-uri": f"postgresql://pgadmin@/pgadmin?host={cluster.socket_dir}",
        "--pgadmin-cli": str(PGADMIN_CLI),
    }
    base[args[0]] = args[1]
    result = dbinit(None, "pgadmin-boot", *[x for kv in base.items() for x in kv])
    assert result.returncode != 0
    assert message in one_error_line(result)


def test_pgadmin_cli_is_installed_for_the_tests():
    assert shutil.which(str(PGADMIN_CLI)), "uv sync installs the pgadmin dependency group"


def test_a_failing_pgadmin_is_reported_by_its_telling_line(box, tmp_path):
    cluster, folder = box
    fake = tmp_path / "pgadmin4-cli"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'pgAdmin 4 - Application Initialisation'\n"
        "echo 'Traceback (most recent call last):' >&2\n"
        "echo '  File \"x.py\", line 1, in <module>' >&2\n"
        "echo 'sqlalchemy.exc.OperationalError: (psycopg.OperationalError) permission denied"
        " for schema public' >&2\n"
        "echo '(Background on this error at: https://sqlalche.me/e/20/e3q8)' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    result = boot(cluster, folder, "--pgadmin-cli", str(fake))
    assert result.returncode == 1
    line = one_error_line(result)
    assert "pgAdmin's setup-db failed (exit status 1): sqlalchemy.exc.OperationalError" in line
    assert "permission denied for schema public" in line and "password" not in line
