"""Phase 5: inside the pgAdmin database: `dbinit.connection_params()` in a schema the
admin role owns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from dbinit import acl
from dbinit.acl import Grant
from dbinit.names import Names
from dbinit.plan.change import (
    Change,
)
from dbinit.plan.functions import plan_definer_functions

if TYPE_CHECKING:
    import psycopg


CONNECTION_PARAMS_BODY = """
SELECT jsonb_build_object(
    'host', btrim(split_part(current_setting('unix_socket_directories'), ',', 1), ' "'),
    'port', current_setting('port')::int,
    'sslmode', 'disable'
)
"""


# connection_params() lives in a schema of its own, owned by the admin role: the owner of a
# schema may drop anything in it, and pgadmin owns its database's `public` schema.
PARAMS_SCHEMA = "dbinit"
PARAMS_FUNCTION = f"{PARAMS_SCHEMA}.connection_params()"
OLD_PARAMS_FUNCTION = "public.connection_params()"  # where dbinit 0.1 made it


@dataclass(frozen=True)
class PgadminDbState:
    schema_owner: str | None  # None: no schema PARAMS_SCHEMA
    # Grants on the schema to roles other than its owner and the admin role.
    schema_grants: frozenset[Grant]
    # (body, security definer, settings, owner, result type, language, acl "grantee:privilege")
    function: tuple[Any, ...] | None
    # The owner of public.connection_params(), if there is one.
    old_function_owner: str | None

    @classmethod
    def fresh(cls) -> PgadminDbState:
        return cls(None, frozenset(), None, None)

    @classmethod
    def read(cls, conn: psycopg.Connection[Any], names: Names) -> PgadminDbState:
        schema = conn.execute(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s",
            [PARAMS_SCHEMA],
        ).fetchone()
        grants = conn.execute(
            f"""
            SELECT {acl.GRANTEE_SQL}, a.privilege_type, a.is_grantable
            FROM pg_namespace n
            CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
            WHERE n.nspname = %s AND a.grantee <> n.nspowner
              AND a.grantee <> (SELECT oid FROM pg_roles WHERE rolname = %s)
            """,  # noqa: S608 (fixed text; names are parameters)
            [PARAMS_SCHEMA, names.admin],
        ).fetchall()
        function = conn.execute(
            f"""
            SELECT p.prosrc, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner),
                   pg_get_function_result(p.oid), l.lanname,
                   ARRAY(SELECT {acl.GRANTEE_SQL} || ':' || a.privilege_type
                         FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                         ORDER BY 1)
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            JOIN pg_language l ON l.oid = p.prolang
            WHERE n.nspname = %s AND p.proname = 'connection_params' AND p.pronargs = 0
            """,  # noqa: S608 (fixed text; the schema is a parameter)
            [PARAMS_SCHEMA],
        ).fetchone()
        old = conn.execute(
            "SELECT pg_get_userbyid(p.proowner) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'public' AND p.proname = 'connection_params' AND p.pronargs = 0"
        ).fetchone()
        return cls(
            schema_owner=None if schema is None else str(schema[0]),
            schema_grants=acl.grants(grants),
            function=None if function is None else tuple(function),
            old_function_owner=None if old is None else str(old[0]),
        )

    def function_differs(self, names: Names) -> list[str]:
        """How connection_params() differs from the one setup makes (empty: it is the same)."""
        if self.function is None:
            return ["it does not exist"]
        body, definer, config, owner, result, language, grants = self.function
        wanted_acl = sorted([f"{names.admin}:EXECUTE", f"{names.pgadmin}:EXECUTE"])
        checks = [
            (body == CONNECTION_PARAMS_BODY and language == "sql", "its body was changed"),
            (bool(definer), "it is not SECURITY DEFINER"),
            (list(config or []) == ["search_path=pg_catalog"], "its search_path was changed"),
            (owner == names.admin, f"it is owned by {owner}, not {names.admin}"),
            (result == "jsonb", f"it returns {result}, not jsonb"),
            (sorted(grants) == wanted_acl, "others than admin and pgadmin may run it"),
        ]
        return [why for ok, why in checks if not ok]


def plan_pgadmin_database(conn: psycopg.Connection[Any] | None, names: Names) -> list[Change]:
    state = PgadminDbState.read(conn, names) if conn is not None else PgadminDbState.fresh()
    db, admin = names.pgadmin_db, sql.Identifier(names.admin)
    schema = sql.Identifier(PARAMS_SCHEMA)
    changes: list[Change] = []
    if state.schema_owner is None:
        changes.append(
            Change(
                f"create schema {PARAMS_SCHEMA} in database {db} (owner {names.admin}, "
                f"for connection_params())",
                sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(schema, admin),
            )
        )
    elif state.schema_owner != names.admin:
        changes.append(
            Change(
                f"make {names.admin} the owner of schema {PARAMS_SCHEMA} in database {db} "
                f"(was {state.schema_owner}, who could replace connection_params())",
                sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, admin),
            )
        )
    fix = acl.diff(state.schema_grants, acl.to(names.pgadmin, "USAGE"), exact=True)
    on = sql.SQL("SCHEMA {}").format(schema)
    changes += [
        Change(d, s) for d, s in acl.statements(fix, on, f"schema {PARAMS_SCHEMA} in database {db}")
    ]
    if state.function_differs(names):
        fn = sql.SQL(PARAMS_FUNCTION)
        changes.append(
            Change(
                f"create function {PARAMS_FUNCTION} in database {db} "
                f"(the local server's socket, for pgAdmin; runs as {names.admin})",
                sql.SQL("DROP FUNCTION IF EXISTS {}").format(fn),
                (
                    sql.SQL(
                        "CREATE FUNCTION {} RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER"
                        " SET search_path = pg_catalog AS {}"
                    ).format(fn, sql.Literal(CONNECTION_PARAMS_BODY)),
                    sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(fn, admin),
                    sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(fn),
                    sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                        fn, sql.Identifier(names.pgadmin)
                    ),
                ),
            )
        )
    skip = {PARAMS_FUNCTION}
    if state.old_function_owner == names.admin:
        skip.add(OLD_PARAMS_FUNCTION)
        changes.append(
            Change(
                f"remove function {OLD_PARAMS_FUNCTION} in database {db} (pgadmin could "
                f"replace it; it is now {PARAMS_FUNCTION})",
                sql.SQL("DROP FUNCTION {}").format(sql.SQL(OLD_PARAMS_FUNCTION)),
            )
        )
    return changes + plan_definer_functions(conn, db, skip)
