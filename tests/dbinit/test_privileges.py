"""The privilege matrix, proven by connecting as each role and trying (trust on the test socket).

Tables odoo made before setup ran and tables it makes afterwards are both covered.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.dbinit.helpers import connect_as, dbinit_ok, query

DENIED = (psycopg.errors.InsufficientPrivilege, psycopg.OperationalError)


@pytest.fixture(scope="module")
def box(cluster):
    """A set-up cluster whose Odoo DB has tables from before and after setup, and a stranger."""
    query(cluster, "CREATE ROLE odoo LOGIN")
    query(cluster, "CREATE DATABASE odoo OWNER odoo TEMPLATE template0 ENCODING 'UTF8'")
    with connect_as(cluster, "odoo", "odoo") as odoo:
        odoo.execute("CREATE TABLE before_setup (id serial PRIMARY KEY, name text)")
        odoo.execute("INSERT INTO before_setup (name) VALUES ('old')")
    dbinit_ok(cluster, "setup")
    with connect_as(cluster, "odoo", "odoo") as odoo:
        odoo.execute("CREATE TABLE after_setup (id serial PRIMARY KEY, name text)")
        odoo.execute("INSERT INTO after_setup (name) VALUES ('new')")
        odoo.execute("CREATE SCHEMA odoo_extra")
        odoo.execute("CREATE TABLE odoo_extra.later (id serial PRIMARY KEY)")
    query(cluster, "CREATE ROLE stranger LOGIN")
    return cluster


def can_connect(cluster, user: str, db: str) -> bool:
    try:
        connect_as(cluster, user, db).close()
    except psycopg.OperationalError as e:
        assert "permission denied" in str(e)
        return False
    return True


def refused(conn: psycopg.Connection, sql: str) -> bool:
    try:
        conn.execute(sql)
    except DENIED:
        return True
    return False


def test_odoo_owns_its_database_and_nothing_else(box):
    assert can_connect(box, "odoo", "odoo")
    assert not can_connect(box, "odoo", "pgadmin")
    with connect_as(box, "odoo", "postgres") as odoo:  # Odoo's start, db listing and bus
        odoo.execute("LISTEN imbus; NOTIFY imbus, 'x'")
        odoo.execute("SELECT datname FROM pg_database")
        assert refused(odoo, "CREATE TEMP TABLE scratch (x int)")
        assert refused(odoo, "CREATE SCHEMA sneaky")
    with connect_as(box, "odoo", "odoo") as odoo:
        odoo.execute("CREATE TABLE odoo_made (x int)")
        odoo.execute("ALTER TABLE odoo_made ADD COLUMN y int")
        odoo.execute("SELECT similarity('odoo', 'oodo'), unaccent('Crème')")  # the extensions
        assert refused(odoo, "CREATE DATABASE odoo_copy")
        assert refused(odoo, "CREATE ROLE sneaky")
        odoo.execute("DROP TABLE odoo_made")


@pytest.mark.parametrize("table", ["before_setup", "after_setup", "odoo_extra.later"])
def test_pgadmin_reads_and_writes_odoo_tables_and_sequences(box, table):
    assert can_connect(box, "pgadmin", "pgadmin")
    with connect_as(box, "pgadmin", "odoo") as pgadmin:
        pgadmin.execute(f"INSERT INTO {table} DEFAULT VALUES")
        pgadmin.execute(f"SELECT count(*) FROM {table}")
        pgadmin.execute(f"UPDATE {table} SET id = id")
        pgadmin.execute(f"DELETE FROM {table} WHERE id > 1")
        sequence = f"{table}_id_seq"
        pgadmin.execute("SELECT nextval(%s::regclass), setval(%s::regclass, 100)",
                        [sequence, sequence])  # fmt: skip


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE pgadmin_made (x int)",
        "CREATE TEMP TABLE scratch (x int)",
        "CREATE SCHEMA pgadmin_schema",
        "CREATE INDEX ON before_setup (name)",
        "DROP TABLE after_setup",
        "ALTER TABLE before_setup ADD COLUMN z int",
        "ALTER SEQUENCE after_setup_id_seq RESTART",
        "TRUNCATE before_setup",
        "TRUNCATE odoo_extra.later",
        "CREATE TRIGGER t BEFORE INSERT ON before_setup FOR EACH ROW EXECUTE FUNCTION now()",
        "COMMENT ON TABLE before_setup IS 'mine'",
        "CREATE EXTENSION IF NOT EXISTS pgcrypto",
    ],
)
def test_pgadmin_cannot_create_drop_alter_or_truncate_in_odoos_database(box, sql):
    with connect_as(box, "pgadmin", "odoo") as pgadmin:
        assert refused(pgadmin, sql), f"pgadmin could run: {sql}"


def test_pgadmin_cannot_pass_its_rights_on(box):
    with connect_as(box, "pgadmin", "odoo") as pgadmin:
        pgadmin.execute("GRANT SELECT ON before_setup TO stranger")  # a warning, not an error
    assert query(box, "SELECT has_table_privilege('stranger', 'before_setup', 'SELECT')",
                 "odoo") == [(False,)]  # fmt: skip


def test_pgadmin_cannot_reach_other_databases_or_grow_its_rights(box):
    assert not can_connect(box, "pgadmin", "postgres")
    with connect_as(box, "pgadmin", "pgadmin") as pgadmin:
        assert refused(pgadmin, "CREATE DATABASE pgadmin2")
        assert refused(pgadmin, "CREATE ROLE sneaky")
        assert refused(pgadmin, "SET ROLE odoo")


def test_a_role_setup_knows_nothing_of_cannot_connect_anywhere_of_ours(box):
    assert not can_connect(box, "stranger", "odoo")
    assert not can_connect(box, "stranger", "pgadmin")
    assert not can_connect(box, "stranger", "postgres")


def test_admin_is_a_superuser(box):
    with connect_as(box, "admin", "odoo") as admin:
        assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")\
            .fetchone() == (True,)  # fmt: skip
        admin.execute("CREATE ROLE made_by_admin; DROP ROLE made_by_admin")


def test_the_handyman_cannot_log_in(box):
    assert not _logs_in(box, "odoo_handyman")


def _logs_in(cluster, user: str) -> bool:
    try:
        connect_as(cluster, user, "odoo").close()
    except psycopg.OperationalError as e:
        assert "not permitted to log in" in str(e)
        return False
    return True
