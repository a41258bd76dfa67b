"""Run the real `dbinit` console script and read the catalog independently of dbinit's code."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import psycopg

from tests.conftest import PostgresCluster
from tests.helpers import one_error_line, run_tool, tool_path

__all__ = ["one_error_line"]

DBINIT = tool_path("dbinit")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ODBOX_", "DBINIT_", "PG"))}
    env.update(extra)
    return env


def dbinit(
    cluster: PostgresCluster | None, *args: str, dsn: str | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run `dbinit ARGS… --dsn DSN` as a user would; never raises on a non-zero exit."""
    if cluster is not None or dsn is not None:
        args += ("--dsn", dsn or cluster.dsn)  # type: ignore[union-attr]
    return run_tool("dbinit", *args, env=kwargs.pop("env", None) or clean_env(), **kwargs)


def dbinit_ok(cluster: PostgresCluster, *args: str, **kwargs: Any) -> str:
    result = dbinit(cluster, *args, **kwargs)
    assert result.returncode == 0, f"dbinit {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def connect_as(cluster: PostgresCluster, user: str, db: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=str(cluster.socket_dir), port=cluster.port, user=user, dbname=db, autocommit=True
    )


def query(cluster: PostgresCluster, sql: str, db: str = "postgres") -> list[tuple[Any, ...]]:
    """Run SQL as the superuser; the rows of the last statement ([] if it returns none)."""
    with connect_as(cluster, cluster.superuser, db) as conn:
        cursor = conn.execute(sql)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description is not None else []


# The catalog facts setup manages, read with plain SQL (not with dbinit's own queries).
CLUSTER_FACTS = {
    "roles": """SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,
                       rolreplication, rolbypassrls, rolconnlimit, rolpassword IS NOT NULL,
                       rolvaliduntil
                FROM pg_authid ORDER BY rolname""",
    "memberships": """SELECT r.rolname, m.rolname, g.rolname, am.admin_option
                      FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid
                      JOIN pg_roles m ON m.oid = am.member JOIN pg_roles g ON g.oid = am.grantor
                      ORDER BY 1, 2""",
    "databases": """SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding),
                           datcollate, datctype, datistemplate, datallowconn, datconnlimit,
                           ARRAY(SELECT unnest(datacl)::text ORDER BY 1)
                    FROM pg_database ORDER BY datname""",
}
DATABASE_FACTS = {
    "schemas": """SELECT nspname, pg_get_userbyid(nspowner),
                         ARRAY(SELECT unnest(nspacl)::text ORDER BY 1)
                  FROM pg_namespace ORDER BY nspname""",
    "default acls": """SELECT pg_get_userbyid(defaclrole), defaclnamespace::regnamespace::text,
                              defaclobjtype, ARRAY(SELECT unnest(defaclacl)::text ORDER BY 1)
                       FROM pg_default_acl ORDER BY 1, 2, 3""",
    "extensions": """SELECT extname, pg_get_userbyid(extowner), extnamespace::regnamespace::text
                     FROM pg_extension ORDER BY extname""",
    "relations": """SELECT c.oid::regclass::text, c.relkind, pg_get_userbyid(c.relowner),
                           ARRAY(SELECT unnest(c.relacl)::text ORDER BY 1)
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                    ORDER BY 1""",
    "functions": """SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner), p.prosecdef,
                           p.proconfig, p.prosrc, ARRAY(SELECT unnest(p.proacl)::text ORDER BY 1)
                    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'public' ORDER BY 1""",
}


def catalog(cluster: PostgresCluster) -> dict[str, list[tuple[Any, ...]]]:
    """Everything setup touches, cluster-wide and inside every connectable database."""
    facts = {name: query(cluster, sql) for name, sql in CLUSTER_FACTS.items()}
    databases = [
        str(r[0]) for r in query(cluster, "SELECT datname FROM pg_database WHERE datallowconn")
    ]
    for db in sorted(databases):
        for name, sql in DATABASE_FACTS.items():
            facts[f"{db}: {name}"] = query(cluster, sql, db)
    return facts
