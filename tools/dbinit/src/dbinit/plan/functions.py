"""Phase 6: nobody but superusers may run a superuser's SECURITY DEFINER function."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from dbinit import acl
from dbinit.plan.change import (
    USER_SCHEMAS,
    Change,
)

if TYPE_CHECKING:
    import psycopg


# SQL for a function's schema-qualified signature, as GRANT and REVOKE take it. The server
# quotes every part (quote_ident, format_type), so the text is safe to send back as SQL.
SIGNATURE_SQL = (
    "quote_ident(n.nspname) || '.' || quote_ident(p.proname)"
    " || '(' || pg_get_function_identity_arguments(p.oid) || ')'"
)


@dataclass(frozen=True)
class DefinerFunction:
    """A SECURITY DEFINER function owned by a superuser that roles other than superusers may run:
    whoever may run it has the superuser's rights for what it does (pgadmin made itself one
    through such a function)."""

    signature: str
    owner: str
    runners: tuple[str, ...]


def definer_functions(
    conn: psycopg.Connection[Any], skip: Collection[str] = ()
) -> list[DefinerFunction]:
    """Such functions in the database `conn` is connected to, but for the signatures in `skip`."""
    rows = conn.execute(
        f"""
        SELECT {SIGNATURE_SQL}, pg_get_userbyid(p.proowner),
               array_agg(DISTINCT {acl.GRANTEE_SQL} ORDER BY {acl.GRANTEE_SQL})
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        JOIN pg_roles o ON o.oid = p.proowner
        CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
        WHERE p.prosecdef AND o.rolsuper AND {USER_SCHEMAS}
          AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
          AND (a.grantee = 0 OR NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.oid = a.grantee))
        GROUP BY 1, 2
        ORDER BY 1
        """  # noqa: S608 (fixed text, no input)
    ).fetchall()
    return [
        DefinerFunction(str(sig), str(owner), tuple(str(r) for r in runners))
        for sig, owner, runners in rows
        if sig not in skip
    ]


def plan_definer_functions(
    conn: psycopg.Connection[Any] | None, db: str, skip: Collection[str] = ()
) -> list[Change]:
    """Take EXECUTE on superusers' SECURITY DEFINER functions back from everyone else."""
    if conn is None:
        return []  # a database just created from template0 has none
    changes: list[Change] = []
    for function in definer_functions(conn, skip):
        for runner in function.runners:
            changes.append(
                Change(
                    f"revoke EXECUTE on function {function.signature} in database {db} from "
                    f"{runner} (it runs as superuser {function.owner})",
                    sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM {} CASCADE").format(
                        sql.SQL(function.signature), acl.role_sql(runner)
                    ),
                )
            )
    return changes
