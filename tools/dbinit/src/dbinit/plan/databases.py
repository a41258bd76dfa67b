"""Phases 2 and 3: the databases (from template0, UTF8, owned by their roles), and who
may connect to them."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from psycopg import sql

from dbinit import acl
from dbinit.acl import PUBLIC
from dbinit.names import Names
from dbinit.plan.change import (
    DATABASE_ALL,
    Change,
)
from odbox_common.errors import ToolError

if TYPE_CHECKING:
    import psycopg


def plan_databases(conn: psycopg.Connection[Any], names: Names) -> tuple[list[Change], set[str]]:
    """Changes for missing databases and wrong owners, and the names of databases to create."""
    owners = {names.odoo_db: names.odoo}
    if names.with_pgadmin:
        owners[names.pgadmin_db] = names.pgadmin
    rows = conn.execute(
        "SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding)"
        " FROM pg_database WHERE datname = ANY(%s)",
        [list(owners)],
    ).fetchall()
    existing = {str(r[0]): (str(r[1]), str(r[2])) for r in rows}
    changes: list[Change] = []
    created: set[str] = set()
    for db, owner in owners.items():
        if db not in existing:
            created.add(db)
            changes.append(
                Change(
                    f"create database {db} (owner {owner}, UTF8, from template0)",
                    sql.SQL(
                        "CREATE DATABASE {} WITH OWNER {} TEMPLATE template0 ENCODING 'UTF8'"
                        " LC_COLLATE 'C'"
                    ).format(sql.Identifier(db), sql.Identifier(owner)),
                )
            )
            continue
        current_owner, encoding = existing[db]
        if encoding != "UTF8":
            raise ToolError(
                f"database {db} exists with encoding {encoding}, but it must be UTF8; dbinit "
                "never drops a database: dump it, drop it and run setup again"
            )
        if current_owner != owner:
            changes.append(
                Change(
                    f"make {owner} the owner of database {db} (was {current_owner})",
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(db), sql.Identifier(owner)
                    ),
                )
            )
    return changes, created


def plan_database_privileges(
    conn: psycopg.Connection[Any], names: Names, created: Collection[str] = ()
) -> list[Change]:
    """`created`: databases a dry run would have created, assumed to have the default ACL."""
    system = ["postgres", "template1"]
    rows = conn.execute(
        f"""
        SELECT d.datname, pg_get_userbyid(d.datdba), {acl.GRANTEE_SQL}, a.privilege_type,
               a.is_grantable
        FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
        WHERE d.datname = ANY(%s)
        """,  # noqa: S608 (fixed text, no input)
        [[*names.databases, *system]],
    ).fetchall()
    owners = {str(r[0]): str(r[1]) for r in rows}
    by_db: dict[str, list[tuple[str, str, bool]]] = {}
    for db, _, grantee, privilege, grantable in rows:
        by_db.setdefault(str(db), []).append((grantee, privilege, grantable))
    for db in set(created) - set(owners):
        owners[db] = names.odoo if db == names.odoo_db else names.pgadmin
        by_db[db] = [(owners[db], p, False) for p in DATABASE_ALL]
        by_db[db] += [(PUBLIC, "CONNECT", False), (PUBLIC, "TEMPORARY", False)]
    managed_roles = (
        [names.odoo, names.pgadmin, names.handyman] if names.with_pgadmin else [names.odoo]
    )
    changes: list[Change] = []
    for db in [*names.databases, *system]:
        if db not in owners:
            continue  # no template1 on this server
        actual = acl.grants(by_db.get(db, []))
        owner = owners[db]
        if db == names.odoo_db:
            required = acl.to(owner, *DATABASE_ALL)
            if names.with_pgadmin:
                required |= acl.to(names.pgadmin, "CONNECT")
            fix = acl.diff(actual, required, exact=True)
        elif names.with_pgadmin and db == names.pgadmin_db:
            fix = acl.diff(actual, acl.to(owner, *DATABASE_ALL), exact=True)
        elif db == "postgres" and owner != names.odoo:
            # Odoo's server start, its database listing (dbfilter) and its bus (NOTIFY imbus)
            # connect to `postgres`: odoo may CONNECT there, and nothing more.
            forbidden = [(r, "*") for r in [PUBLIC, *managed_roles] if r not in (owner, names.odoo)]
            forbidden += [(names.odoo, p) for p in DATABASE_ALL if p != "CONNECT"]
            fix = acl.diff(actual, acl.to(names.odoo, "CONNECT"), forbidden=forbidden)
        else:
            forbidden = [(r, "*") for r in [PUBLIC, *managed_roles] if r != owner]
            fix = acl.diff(actual, set(), forbidden=forbidden)
        on = sql.SQL("DATABASE {}").format(sql.Identifier(db))
        changes += [Change(d, s) for d, s in acl.statements(fix, on, f"database {db}")]
    return changes
