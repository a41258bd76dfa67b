"""Functions: connection_params() stays admin's and pgadmin's alone, and no function lends a
superuser's rights to anyone else in the managed databases. Whatever setup would repair, check
reports first (exit 3)."""

from __future__ import annotations

import psycopg
import pytest

from tests.dbinit.helpers import connect_as, dbinit, dbinit_ok, query

# Finds connection_params() wherever setup keeps it (schema public before, dbinit now).
FIND = "SET search_path = dbinit, public;"


@pytest.fixture(scope="module")
def box(cluster):
    dbinit_ok(cluster, "setup")
    assert dbinit(cluster, "check").returncode == 0
    return cluster


def drifts(result) -> list[str]:
    return [line.split("drift: ", 1)[1] for line in result.stdout.splitlines() if "drift: " in line]


def where_connection_params(cluster) -> str:
    rows = query(
        cluster,
        "SELECT oid::regprocedure::text FROM pg_proc WHERE proname = 'connection_params'",
        "pgadmin",
    )
    assert len(rows) == 1, rows
    return str(rows[0][0])


def check_then_setup_repairs(cluster, expected: str) -> None:
    """check names `expected` with exit 3; setup repairs it; check and setup then agree."""
    result = dbinit(cluster, "check")
    assert result.returncode == 3, result.stdout
    assert any(expected in d for d in drifts(result)), drifts(result)
    assert "made" in dbinit_ok(cluster, "setup")
    after = dbinit(cluster, "check")
    assert after.returncode == 0, after.stdout
    assert "are as they should be" in dbinit_ok(cluster, "setup")


def test_public_may_not_run_connection_params(box):
    query(box, f"{FIND} GRANT EXECUTE ON FUNCTION connection_params() TO PUBLIC", "pgadmin")
    check_then_setup_repairs(box, "PUBLIC can run connection_params() in database pgadmin")
    function = where_connection_params(box)
    can = f"SELECT has_function_privilege('public', '{function}', 'EXECUTE')"
    assert not query(box, can, "pgadmin")[0][0]


def test_pgadmin_cannot_drop_or_replace_connection_params(box):
    function = where_connection_params(box)
    with connect_as(box, "pgadmin", "pgadmin") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"DROP FUNCTION {function}")  # type: ignore[arg-type]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                f"CREATE OR REPLACE FUNCTION {function} RETURNS jsonb LANGUAGE sql"  # type: ignore[arg-type]
                ' AS $$ SELECT \'{"host": "/tmp/evil", "port": 1}\'::jsonb $$'
            )
    assert dbinit(box, "check").returncode == 0


def schema_owner(cluster, schema: str) -> str:
    rows = query(
        cluster, f"SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = '{schema}'",
        "pgadmin",
    )  # fmt: skip
    return str(rows[0][0])


def test_the_schema_of_connection_params_is_not_pgadmins(box):
    schema = where_connection_params(box).split(".")[0]
    owner = schema_owner(box, schema)
    assert owner == "admin"
    query(box, f"ALTER SCHEMA {schema} OWNER TO pgadmin", "pgadmin")
    check_then_setup_repairs(
        box, f"pgadmin owns schema {schema} of database pgadmin, which holds connection_params()"
    )
    owner = schema_owner(box, schema)
    assert owner == "admin"


def test_a_connection_params_replaced_by_pgadmin_is_drift(box):
    # What pgadmin could do while it owned the schema (public, before): its own function, which
    # tells pgadmin-boot where to connect.
    function = where_connection_params(box)
    query(
        box,
        f"DROP FUNCTION {function}; CREATE FUNCTION {function} RETURNS jsonb LANGUAGE sql"
        ' AS $$ SELECT \'{"host": "/tmp/evil", "port": 1}\'::jsonb $$;'
        f" ALTER FUNCTION {function} OWNER TO pgadmin",
        "pgadmin",
    )
    check_then_setup_repairs(box, "connection_params() in database pgadmin is not the one setup")


def test_a_changed_body_of_connection_params_is_drift(box):
    function = where_connection_params(box)
    query(
        box,
        f"CREATE OR REPLACE FUNCTION {function} RETURNS jsonb LANGUAGE sql SECURITY DEFINER"
        ' SET search_path = pg_catalog AS $$ SELECT \'{"host": "/x", "port": 1}\'::jsonb $$',
        "pgadmin",
    )
    check_then_setup_repairs(box, "connection_params() in database pgadmin is not the one setup")


ESCALATE = (
    "CREATE FUNCTION public.run_sql(text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER"
    " AS $$ BEGIN EXECUTE $1; END $$"
)


@pytest.mark.parametrize("db", ["odoo", "pgadmin"])
def test_a_superuser_definer_function_others_may_run_is_drift_and_revoked(box, db):
    query(box, ESCALATE, db)  # PUBLIC may execute a new function
    try:
        # How pgadmin made itself a superuser with it:
        with connect_as(box, "pgadmin", db) as conn:
            conn.execute("SELECT public.run_sql('ALTER ROLE pgadmin SUPERUSER')")
        result = dbinit(box, "check")
        assert result.returncode == 3
        assert (
            f"function public.run_sql(text) in database {db} runs as superuser postgres "
            "(SECURITY DEFINER) and PUBLIC can run it" in drifts(result)
        )
        assert "pgadmin is a superuser" in drifts(result)
        dbinit_ok(box, "setup")
        assert dbinit(box, "check").returncode == 0
        denied = pytest.raises(psycopg.errors.InsufficientPrivilege)
        with connect_as(box, "pgadmin", db) as conn, denied:
            conn.execute("SELECT public.run_sql('ALTER ROLE pgadmin SUPERUSER')")
        # A grant by name is drift too.
        query(box, "GRANT EXECUTE ON FUNCTION public.run_sql(text) TO pgadmin", db)
        result = dbinit(box, "check")
        assert result.returncode == 3
        assert any("and pgadmin can run it" in d for d in drifts(result)), drifts(result)
        dbinit_ok(box, "setup")
        assert dbinit(box, "check").returncode == 0
    finally:
        query(box, "DROP FUNCTION IF EXISTS public.run_sql(text)", db)
        query(box, "ALTER ROLE pgadmin NOSUPERUSER")


def test_definer_functions_only_superusers_may_run_and_plain_functions_are_left_alone(box):
    query(box, ESCALATE + "; REVOKE ALL ON FUNCTION public.run_sql(text) FROM PUBLIC", "odoo")
    query(box, "CREATE FUNCTION public.plain() RETURNS int LANGUAGE sql AS 'SELECT 1'", "odoo")
    try:
        assert dbinit(box, "check").returncode == 0
        assert "are as they should be" in dbinit_ok(box, "setup")
    finally:
        query(box, "DROP FUNCTION public.run_sql(text); DROP FUNCTION public.plain()", "odoo")


def test_check_reports_every_change_setup_would_make(box, monkeypatch):
    # A change check has no words of its own for still makes it exit 3, in setup's words.
    from psycopg import sql

    import dbinit.provision
    from dbinit.audit import check
    from dbinit.connect import resolve
    from dbinit.names import Names

    original = dbinit.provision.plan_odoo_database

    def one_more(state, names):
        extra = dbinit.provision.Change("grant nothing to nobody", sql.SQL("SELECT 1"))
        return [*original(state, names), extra]

    monkeypatch.setattr(dbinit.provision, "plan_odoo_database", one_more)
    report = check(resolve(box.dsn), Names())
    assert not report.ok
    assert report.drift == ["setup would grant nothing to nobody"]


def test_a_box_set_up_by_an_older_dbinit_loses_public_connection_params(box):
    # What dbinit made before: the function in schema public, which pgadmin owns.
    query(
        box,
        "CREATE FUNCTION public.connection_params() RETURNS jsonb LANGUAGE sql SECURITY DEFINER"
        " SET search_path = pg_catalog AS $$ SELECT '{}'::jsonb $$;"
        " ALTER FUNCTION public.connection_params() OWNER TO admin;"
        " REVOKE ALL ON FUNCTION public.connection_params() FROM PUBLIC;"
        " GRANT EXECUTE ON FUNCTION public.connection_params() TO pgadmin",
        "pgadmin",
    )
    check_then_setup_repairs(box, "public.connection_params() in database pgadmin is left")
    assert not query(box, "SELECT 1 FROM pg_proc WHERE proname = 'connection_params'"
                     " AND pronamespace = 'public'::regnamespace", "pgadmin")  # fmt: skip
