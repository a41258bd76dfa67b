"""`dbinit setup` on a real cluster: idempotent, complete, and nothing beyond what it manages."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest

from dbinit import provision
from tests.conftest import start_postgres_cluster
from tests.dbinit.helpers import (
    DBINIT,
    catalog,
    clean_env,
    dbinit,
    dbinit_ok,
    one_error_line,
    query,
)


def test_three_runs_leave_the_catalog_identical_to_one(cluster):
    before = catalog(cluster)
    first = dbinit_ok(cluster, "setup")
    assert "created role odoo" in first and "created database odoo" in first
    once = catalog(cluster)
    assert once != before
    for _ in range(2):
        again = dbinit_ok(cluster, "setup")
        assert "as they should be" in again
        assert len(again.strip().splitlines()) == 1
        assert catalog(cluster) == once


def test_the_odoo_database_is_utf8_from_template0_with_odoos_extensions(cluster):
    dbinit_ok(cluster, "setup")
    [(owner, encoding, collate)] = query(
        cluster,
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate"
        " FROM pg_database WHERE datname = 'odoo'",
    )
    assert (owner, encoding, collate) == ("odoo", "UTF8", "C")
    extensions = {r[0] for r in query(cluster, "SELECT extname FROM pg_extension", "odoo")}
    assert {"pg_trgm", "unaccent"} <= extensions
    # template0, not template1: what someone added to template1 does not reach Odoo's database.
    query(cluster, "CREATE TABLE template1_marker (x int)", "template1")
    try:
        dbinit_ok(cluster, "setup", "--odoo-db", "odoo2", "--no-pgadmin")
        tables = query(cluster, "SELECT relname FROM pg_class WHERE relname = 'template1_marker'",
                       "odoo2")  # fmt: skip
        assert tables == []
    finally:
        query(cluster, "DROP TABLE template1_marker", "template1")
        query(cluster, "DROP DATABASE odoo2")


def test_roles_have_exactly_the_attributes_setup_promises(cluster):
    dbinit_ok(cluster, "setup")
    rows = query(
        cluster,
        "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolreplication,"
        " rolbypassrls, rolpassword IS NULL FROM pg_authid"
        " WHERE rolname IN ('admin', 'odoo', 'pgadmin', 'odoo_handyman') ORDER BY 1",
    )
    assert rows == [
        ("admin", True, False, False, True, False, False, True),
        ("odoo", False, False, False, True, False, False, True),
        ("odoo_handyman", False, False, False, False, False, False, True),
        ("pgadmin", False, False, False, True, False, False, True),
    ]
    members = query(
        cluster,
        "SELECT r.rolname, m.rolname FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid"
        " JOIN pg_roles m ON m.oid = am.member WHERE m.rolname IN ('odoo', 'pgadmin')",
    )
    assert members == [("odoo_handyman", "pgadmin")]


def test_dry_run_prints_every_change_and_makes_none():
    with start_postgres_cluster() as fresh:
        before = catalog(fresh)
        planned = dbinit_ok(fresh, "setup", "--dry-run")
        assert catalog(fresh) == before
        made = dbinit_ok(fresh, "setup")
        would = [line.split("would ", 1)[1] for line in planned.splitlines() if "would " in line]
        done = [line.split("dbinit: ", 1)[1] for line in made.splitlines()][:-1]
        assert [provision.done(w) for w in would] == done
        assert "as they should be" in dbinit_ok(fresh, "setup", "--dry-run")


def test_setup_undoes_what_the_seed_granted_and_keeps_what_it_does_not_manage(cluster):
    """The seed gave pgadmin pg_read_all_data/pg_write_all_data on the whole cluster."""
    dbinit_ok(cluster, "setup")
    query(cluster, "GRANT pg_read_all_data, pg_write_all_data TO pgadmin")
    query(cluster, "ALTER ROLE odoo CREATEDB PASSWORD 'secret'")
    query(cluster, "CREATE ROLE monitor LOGIN; GRANT CONNECT ON DATABASE postgres TO monitor")
    query(cluster, "GRANT odoo TO admin")  # a superuser joining odoo to SET ROLE is fine
    try:
        out = dbinit_ok(cluster, "setup")
        assert "revoked membership of pgadmin in pg_read_all_data" in out
        assert "revoked membership of pgadmin in pg_write_all_data" in out
        assert "altered role odoo: NOCREATEDB" in out
        assert "removed the password of role odoo" in out
        assert "monitor" not in out and "admin in odoo" not in out
        assert query(cluster, "SELECT has_database_privilege('monitor', 'postgres', 'CONNECT')") \
            == [(True,)]  # fmt: skip
        assert dbinit(cluster, "check").returncode == 0
    finally:
        query(cluster, "REVOKE odoo FROM admin; REVOKE ALL ON DATABASE postgres FROM monitor")
        query(cluster, "DROP ROLE monitor")


def test_an_existing_odoo_database_that_is_not_utf8_is_refused_and_kept():
    with start_postgres_cluster() as fresh:
        query(fresh, "CREATE DATABASE odoo TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C'"
                     " LC_CTYPE 'C'")  # fmt: skip
        before = catalog(fresh)
        result = dbinit(fresh, "setup")
        assert result.returncode == 1
        line = one_error_line(result)
        assert "SQL_ASCII" in line and "never drops" in line
        assert catalog(fresh) == before  # refused before any change: no role was made either


@pytest.mark.parametrize(
    "option, name",
    [
        ("--odoo-role", 'x"; DROP ROLE admin; --'),
        ("--admin-role", "admin'; DROP DATABASE postgres; --"),
        ("--odoo-db", "odoo; DROP DATABASE postgres"),
        ("--pgadmin-db", 'pg"admin'),
        ("--pgadmin-role", "Pgadmin"),
        ("--odoo-role", "pg_monitor"),
        ("--odoo-role", "public"),
        ("--odoo-db", "template1"),
        ("--odoo-role", "o" * 64),
        ("--odoo-role", ""),
        ("--extension", "pg_trgm; DROP ROLE admin"),
    ],
)
def test_names_that_are_not_plain_identifiers_are_refused_and_nothing_happens(
    cluster, option, name
):
    before = catalog(cluster)
    result = dbinit(cluster, "setup", option, name)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "name" in line or "reserved" in line or "PostgreSQL's own" in line
    assert catalog(cluster) == before


def test_one_role_for_two_jobs_is_refused(cluster):
    result = dbinit(cluster, "setup", "--pgadmin-role", "odoo")
    assert result.returncode == 2
    assert "both 'odoo'" in one_error_line(result)


def test_names_with_hyphens_and_custom_names_work_end_to_end():
    with start_postgres_cluster() as fresh:
        names = ["--admin-role", "box-admin", "--odoo-role", "odoo-prod", "--odoo-db", "odoo-prod",
                 "--pgadmin-role", "pg-admin", "--pgadmin-db", "pg-admin"]  # fmt: skip
        dbinit_ok(fresh, "setup", *names)
        snapshot = catalog(fresh)
        assert "as they should be" in dbinit_ok(fresh, "setup", *names)
        assert catalog(fresh) == snapshot
        assert dbinit(fresh, "check", *names).returncode == 0
        roles = {r[0] for r in query(fresh, "SELECT rolname FROM pg_roles")}
        assert {"box-admin", "odoo-prod", "pg-admin", "odoo-prod_handyman"} <= roles


@pytest.mark.parametrize("variable", ["ODBOX_DB", "ODBOX_ODOO_DB"])
def test_settings_come_from_odbox_environment_variables(cluster, variable):
    """ODBOX_DB names Odoo's database in every tool; dbinit's old ODBOX_ODOO_DB still works
    for one release, with a warning."""
    env = clean_env(ODBOX_DSN=cluster.dsn, ODBOX_NO_PGADMIN="1", **{variable: "envodoo"})
    result = subprocess.run([DBINIT, "setup"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    try:
        assert query(cluster, "SELECT datname FROM pg_database WHERE datname = 'envodoo'")
        assert "pgadmin" not in result.stdout
        renamed = "warning: ODBOX_ODOO_DB is now called ODBOX_DB" in result.stderr
        assert renamed == (variable == "ODBOX_ODOO_DB"), result.stderr
    finally:
        query(cluster, "DROP DATABASE envodoo")


def test_concurrent_setups_are_serialised_and_both_succeed():
    with start_postgres_cluster() as fresh:
        results: list[subprocess.CompletedProcess[str]] = []

        def run() -> None:
            results.append(dbinit(fresh, "setup"))

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
        made = [r.stdout for r in results if "made" in r.stdout]
        assert len(made) == 1  # the others found everything done
        assert dbinit(fresh, "check").returncode == 0


def test_a_setup_that_waits_too_long_for_the_lock_exits_4(cluster):
    dbinit_ok(cluster, "setup")
    import psycopg

    with psycopg.connect(cluster.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [0x6462696E6974])
        result = dbinit(cluster, "setup", "--lock-timeout", "1")
    assert result.returncode == 4
    assert "another `dbinit setup`" in one_error_line(result)


def test_turning_pgadmin_off_takes_its_rights_back():
    with start_postgres_cluster() as fresh:
        dbinit_ok(fresh, "setup")
        query(fresh, "SET ROLE odoo; CREATE TABLE res_partner (id serial PRIMARY KEY)", "odoo")
        dbinit_ok(fresh, "setup", "--no-pgadmin")
        assert dbinit(fresh, "check", "--no-pgadmin").returncode == 0
        assert query(fresh, "SELECT has_database_privilege('pgadmin', 'odoo', 'CONNECT'),"
                            " has_table_privilege('pgadmin', 'res_partner', 'SELECT')",
                     "odoo") == [(False, False)]  # fmt: skip
        assert query(fresh, "SELECT count(*) FROM pg_database WHERE datname = 'pgadmin'") == [(1,)]
        assert "as they should be" in dbinit_ok(fresh, "setup", "--no-pgadmin")


def test_a_table_odoo_does_not_own_is_left_alone_and_named_for_a_human(cluster):
    dbinit_ok(cluster, "setup")
    query(cluster, "CREATE TABLE made_by_postgres (id int)", "odoo")
    try:
        result = dbinit(cluster, "setup")
        assert result.returncode == 0
        assert "public.made_by_postgres in database odoo is owned by postgres" in result.stderr
        assert "ALTER TABLE public.made_by_postgres OWNER TO odoo" in result.stderr
        check = dbinit(cluster, "check")
        assert check.returncode == 3
        assert "need a human (the lines that say 'by hand')" in check.stdout
        document = json.loads(dbinit(cluster, "check", "--json").stdout)
        assert len(document["by_hand"]) == 1 and "made_by_postgres" in document["by_hand"][0]
    finally:
        query(cluster, "DROP TABLE made_by_postgres", "odoo")
