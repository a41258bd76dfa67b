"""Errors are one clear line with a non-zero exit; the standard libpq environment is honoured."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.dbinit.helpers import DBINIT, clean_env, dbinit, one_error_line


def test_server_down_is_one_line_with_what_to_do(tmp_path):
    result = dbinit(None, "setup", dsn=f"host={tmp_path} port=5432 user=postgres")
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"cannot connect to PostgreSQL at {tmp_path}/.s.PGSQL.5432" in line
    assert "is PostgreSQL running? (`dbinit status`)" in line


def test_an_unknown_database_is_one_line(postgres):
    dsn = postgres.dsn.replace("dbname=postgres", "dbname=nope")
    result = dbinit(None, "check", dsn=dsn)
    assert result.returncode == 2
    assert 'database "nope" does not exist; check the database name' in one_error_line(result)


def test_an_unknown_role_is_one_line(postgres):
    result = dbinit(None, "setup", dsn=postgres.dsn.replace("user=postgres", "user=ghost"))
    assert result.returncode == 2
    assert 'role "ghost" does not exist' in one_error_line(result)


def test_setup_as_a_role_that_is_not_a_superuser_changes_nothing(postgres):
    postgres.psql("DROP ROLE IF EXISTS plain; CREATE ROLE plain LOGIN")
    result = dbinit(None, "setup", dsn=postgres.dsn.replace("user=postgres", "user=plain"))
    assert result.returncode == 1
    assert "must run as a PostgreSQL superuser, but 'plain' is not one" in one_error_line(result)
    assert postgres.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'odoo'") == "0"


def test_a_malformed_dsn_is_one_line():
    result = dbinit(None, "status", dsn="host=/tmp port")
    assert result.returncode == 2
    assert "--dsn is not a valid connection string" in one_error_line(result)


def test_debug_shows_the_traceback(tmp_path):
    result = dbinit(None, "setup", "--debug", dsn=f"host={tmp_path}")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_libpq_environment_variables_choose_the_server(postgres):
    env = clean_env(PGHOST=str(postgres.socket_dir), PGPORT=str(postgres.port), PGUSER="postgres")
    result = subprocess.run([DBINIT, "status"], capture_output=True, text=True, env=env)
    assert result.returncode == 0
    assert f"{postgres.socket_dir}/.s.PGSQL.{postgres.port}: ready" in result.stdout


def test_without_a_host_the_local_servers_socket_folder_is_used(tmp_path, monkeypatch):
    from dbinit import connect

    first, second = tmp_path / "run", tmp_path / "var-run"
    first.mkdir()
    second.mkdir()
    monkeypatch.setattr(connect, "SOCKET_DIRS", (str(first), str(second)))
    for var in ("PGHOST", "PGPORT", "PGDATABASE"):
        monkeypatch.delenv(var, raising=False)
    assert connect.resolve(None).params["host"] == str(first)  # no socket anywhere yet
    (second / ".s.PGSQL.5433").touch()
    target = connect.resolve("port=5433")
    assert (target.params["host"], target.dbname) == (str(second), "postgres")
    assert connect.resolve("host=/elsewhere dbname=odoo").params["host"] == "/elsewhere"


def test_usage_errors_exit_2_with_a_hint():
    result = subprocess.run([DBINIT, "setup", "--no-such-option"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "see `dbinit setup --help`" in one_error_line(result)


def test_help_does_not_import_psycopg():
    code = (
        "import sys; from dbinit.cli import run; run(['--help']); run(['setup', '--help']);"
        "assert 'psycopg' not in sys.modules, 'psycopg imported for --help'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["setup", "check", "status", "wait", "pgadmin-boot"])
def test_every_command_has_help(command):
    result = subprocess.run([DBINIT, command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--dsn" in result.stdout or "--db-uri" in result.stdout


def test_a_password_in_the_dsn_is_refused(postgres):
    result = dbinit(None, "status", dsn=postgres.dsn + " password=hunter22")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "holds a password" in line and "hunter22" not in line


def test_a_role_that_may_not_connect_is_told_to_use_a_superuser():
    from tests.conftest import start_postgres_cluster
    from tests.dbinit.helpers import dbinit_ok

    with start_postgres_cluster() as fresh:
        dbinit_ok(fresh, "setup")
        result = dbinit(None, "check", dsn=fresh.dsn.replace("user=postgres", "user=pgadmin"))
        assert result.returncode == 1
        line = one_error_line(result)
        assert 'permission denied for database "postgres"' in line
        assert "connect as a superuser" in line
