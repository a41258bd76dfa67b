"""`dbinit check`: the matrix after setup, and exit 3 naming each drift someone introduces."""

from __future__ import annotations

import json

import pytest

from tests.dbinit.helpers import connect_as, dbinit, dbinit_ok, one_error_line, query


@pytest.fixture(scope="module")
def box(cluster):
    dbinit_ok(cluster, "setup")
    with connect_as(cluster, "odoo", "odoo") as odoo:
        odoo.execute("CREATE TABLE res_partner (id serial PRIMARY KEY, name text)")
        odoo.execute("CREATE TABLE mail_message (id serial PRIMARY KEY, body text)")
    query(cluster, "CREATE ROLE stranger LOGIN")
    return cluster


def test_after_setup_check_prints_the_matrix_and_exits_0(box):
    result = dbinit(box, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for capability in ("superuser", "connect to odoo", "connect to pgadmin",
                       "read and write odoo tables", "truncate, alter or drop odoo tables",
                       "read and write what odoo creates later"):  # fmt: skip
        assert capability in out
    header = next(line for line in out.splitlines() if "other roles" in line)
    assert header.split()[-5:] == ["admin", "odoo", "pgadmin", "other", "roles"]
    assert "no drift" in out
    assert "drift:" not in out


# (what someone does as superuser, in which database, what check must say, how to undo it)
DRIFTS = [
    ("GRANT TRUNCATE ON res_partner TO pgadmin", "odoo",
     "pgadmin can truncate, alter or drop 1 table in odoo: public.res_partner",
     "REVOKE TRUNCATE ON res_partner FROM pgadmin"),
    ("REVOKE SELECT ON mail_message FROM odoo_handyman", "odoo",
     "pgadmin cannot read and write 1 of 2 tables in odoo: public.mail_message",
     "GRANT SELECT ON mail_message TO odoo_handyman"),
    ("REVOKE USAGE ON SEQUENCE res_partner_id_seq FROM odoo_handyman", "odoo",
     "pgadmin cannot use 1 of 2 sequences in odoo: public.res_partner_id_seq",
     "GRANT USAGE ON SEQUENCE res_partner_id_seq TO odoo_handyman"),
    ("GRANT CONNECT ON DATABASE odoo TO PUBLIC", "postgres",
     "PUBLIC, stranger can connect to database odoo",
     "REVOKE CONNECT ON DATABASE odoo FROM PUBLIC"),
    ("GRANT CONNECT ON DATABASE pgadmin TO odoo", "postgres",
     "odoo can connect to database pgadmin",
     "REVOKE CONNECT ON DATABASE pgadmin FROM odoo"),
    ("REVOKE CONNECT ON DATABASE odoo FROM pgadmin", "postgres",
     "pgadmin cannot connect to database odoo",
     "GRANT CONNECT ON DATABASE odoo TO pgadmin"),
    ("ALTER ROLE odoo CREATEDB", "postgres", "odoo can create databases",
     "ALTER ROLE odoo NOCREATEDB"),
    ("ALTER ROLE pgadmin SUPERUSER", "postgres", "pgadmin is a superuser",
     "ALTER ROLE pgadmin NOSUPERUSER"),
    ("ALTER ROLE admin NOSUPERUSER", "postgres", "admin is not a superuser",
     "ALTER ROLE admin SUPERUSER"),
    ("GRANT odoo TO pgadmin", "postgres", "pgadmin is a member of odoo",
     "REVOKE odoo FROM pgadmin"),
    ("GRANT pg_read_all_data TO pgadmin", "postgres",
     "pgadmin is a member of pg_read_all_data", "REVOKE pg_read_all_data FROM pgadmin"),
    ("GRANT CREATE ON SCHEMA public TO pgadmin", "odoo",
     "pgadmin can create objects in database odoo: schema public",
     "REVOKE CREATE ON SCHEMA public FROM pgadmin"),
    ("ALTER DEFAULT PRIVILEGES FOR ROLE odoo REVOKE INSERT ON TABLES FROM odoo_handyman",
     "odoo", "pgadmin will not get INSERT on the tables odoo creates from now on",
     "ALTER DEFAULT PRIVILEGES FOR ROLE odoo GRANT INSERT ON TABLES TO odoo_handyman"),
    ("ALTER DEFAULT PRIVILEGES FOR ROLE odoo GRANT TRUNCATE ON TABLES TO odoo_handyman",
     "odoo", "pgadmin will get TRUNCATE on the tables odoo creates from now on",
     "ALTER DEFAULT PRIVILEGES FOR ROLE odoo REVOKE TRUNCATE ON TABLES FROM odoo_handyman"),
    ("DROP EXTENSION unaccent", "odoo", "extension unaccent is missing in database odoo",
     "CREATE EXTENSION unaccent"),
    ("ALTER ROLE odoo PASSWORD 'x'", "postgres", "odoo has a password",
     "ALTER ROLE odoo PASSWORD NULL"),
    ("ALTER ROLE odoo_handyman CREATEROLE", "postgres",
     "odoo_handyman can create roles (and pgadmin can SET ROLE to it)",
     "ALTER ROLE odoo_handyman NOCREATEROLE"),
    ("GRANT TRUNCATE ON res_partner TO PUBLIC", "odoo",
     "PUBLIC can truncate, alter or drop 1 table in odoo: public.res_partner",
     "REVOKE TRUNCATE ON res_partner FROM PUBLIC"),
    ("ALTER DEFAULT PRIVILEGES FOR ROLE odoo GRANT TRUNCATE ON TABLES TO PUBLIC", "odoo",
     "pgadmin will get TRUNCATE on the tables odoo creates from now on",
     "ALTER DEFAULT PRIVILEGES FOR ROLE odoo REVOKE TRUNCATE ON TABLES FROM PUBLIC"),
    # Odoo's server start, database listing and bus connect to `postgres`.
    ("REVOKE CONNECT ON DATABASE postgres FROM odoo", "postgres",
     "odoo cannot connect to database postgres",
     "GRANT CONNECT ON DATABASE postgres TO odoo"),
    ("GRANT TEMPORARY ON DATABASE postgres TO odoo", "postgres",
     "odoo holds TEMPORARY on database postgres",
     "REVOKE TEMPORARY ON DATABASE postgres FROM odoo"),
    ("GRANT CREATE ON DATABASE postgres TO odoo", "postgres",
     "odoo holds CREATE on database postgres",
     "REVOKE CREATE ON DATABASE postgres FROM odoo"),
    ("GRANT CONNECT ON DATABASE template1 TO PUBLIC", "postgres",
     "PUBLIC can connect to database template1",
     "REVOKE CONNECT ON DATABASE template1 FROM PUBLIC"),
    # A dump from PostgreSQL 14 or older: public owned by postgres, odoo may not create there.
    ("ALTER SCHEMA public OWNER TO postgres", "odoo",
     "odoo cannot create tables in schema public of odoo",
     "ALTER SCHEMA public OWNER TO pg_database_owner; REVOKE ALL ON SCHEMA public FROM odoo"),
    # One setup run must settle this: the superuser's memberships go with its SUPERUSER.
    ("ALTER ROLE pgadmin SUPERUSER; GRANT pg_read_all_data TO pgadmin", "postgres",
     "pgadmin is a superuser",
     "ALTER ROLE pgadmin NOSUPERUSER; REVOKE pg_read_all_data FROM pgadmin"),
    ("GRANT odoo_handyman TO pgadmin WITH ADMIN OPTION", "postgres",
     "pgadmin may grant odoo_handyman to others",
     "REVOKE ADMIN OPTION FOR odoo_handyman FROM pgadmin"),
    ("GRANT SELECT ON res_partner TO PUBLIC", "odoo",
     "PUBLIC can read or write 1 table in odoo: public.res_partner",
     "REVOKE SELECT ON res_partner FROM PUBLIC"),
    ("GRANT UPDATE (name) ON res_partner TO stranger", "odoo",
     "stranger can read or write 1 table in odoo: public.res_partner",
     "REVOKE UPDATE (name) ON res_partner FROM stranger"),
    ("ALTER DEFAULT PRIVILEGES FOR ROLE odoo GRANT SELECT ON TABLES TO stranger", "odoo",
     "stranger will get rights on the tables odoo creates from now on",
     "ALTER DEFAULT PRIVILEGES FOR ROLE odoo REVOKE SELECT ON TABLES FROM stranger"),
    ("GRANT SELECT ON res_partner TO stranger; GRANT CONNECT ON DATABASE odoo TO stranger",
     "odoo", "stranger can connect to database odoo",
     "REVOKE SELECT ON res_partner FROM stranger; REVOKE CONNECT ON DATABASE odoo FROM stranger"),
]  # fmt: skip


@pytest.mark.parametrize("sql, db, expected, undo", DRIFTS, ids=[d[0][:50] for d in DRIFTS])
def test_a_drift_makes_check_exit_3_and_name_it(box, sql, db, expected, undo):
    query(box, sql, db)
    try:
        result = dbinit(box, "check")
        assert result.returncode == 3, result.stdout
        drifts = [line.split("drift: ", 1)[1] for line in result.stdout.splitlines()
                  if "drift: " in line]  # fmt: skip
        assert any(expected in d for d in drifts), drifts
        assert result.stderr == ""
    finally:
        query(box, undo, db)
    assert dbinit(box, "check").returncode == 0


@pytest.mark.parametrize("sql, db, expected, undo", DRIFTS, ids=[d[0][:50] for d in DRIFTS])
def test_setup_repairs_each_drift(box, sql, db, expected, undo):
    query(box, sql, db)
    try:
        dbinit_ok(box, "setup")
        result = dbinit(box, "check")
        assert result.returncode == 0, result.stdout
    finally:
        if dbinit(box, "check").returncode != 0:
            query(box, undo, db)


def test_check_json_describes_the_matrix_and_the_drift(box):
    result = dbinit(box, "check", "--json")
    document = json.loads(result.stdout)
    assert document["ok"] is True and document["drift"] == []
    assert document["columns"] == ["admin", "odoo", "pgadmin", "other roles"]
    connect = next(r for r in document["matrix"] if r["capability"] == "connect to pgadmin")
    assert {k: v["value"] for k, v in connect["cells"].items()} == {
        "admin": "yes", "odoo": "no", "pgadmin": "yes", "other roles": "no"
    }  # fmt: skip
    query(box, "ALTER ROLE pgadmin CREATEROLE")
    try:
        result = dbinit(box, "check", "--json")
        assert result.returncode == 3
        assert json.loads(result.stdout)["drift"] == ["pgadmin can create roles"]
    finally:
        query(box, "ALTER ROLE pgadmin NOCREATEROLE")


def test_check_before_setup_names_what_is_missing():
    from tests.conftest import start_postgres_cluster

    with start_postgres_cluster() as fresh:
        result = dbinit(fresh, "check")
        assert result.returncode == 3
        assert "role odoo does not exist: run `dbinit setup`" in result.stdout
        assert "database odoo does not exist" in result.stdout


def test_check_as_a_role_that_is_not_a_superuser_is_one_clear_line(box):
    dsn = box.dsn.replace("user=postgres", "user=odoo").replace("dbname=postgres", "dbname=odoo")
    result = dbinit(None, "check", dsn=dsn)
    assert result.returncode == 1
    assert "must run as a PostgreSQL superuser, but 'odoo' is not one" in one_error_line(result)
