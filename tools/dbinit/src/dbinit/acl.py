"""Privileges as sets, read from the catalog with aclexplode(), and the statements that fix them.

A grant is (grantee, privilege, grantable); the grantee `PUBLIC` stands for
every role. ACLs are read with `coalesce(acl, acldefault(kind, owner))` so a
NULL ACL (the built-in default) and an explicit one compare the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from psycopg import sql

PUBLIC = "PUBLIC"

# The grantee column, with PUBLIC (oid 0) spelled out.
GRANTEE_SQL = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"


@dataclass(frozen=True, order=True)
class Grant:
    grantee: str
    privilege: str
    grantable: bool = False


def grants(rows: Iterable[tuple[str, str, bool]]) -> frozenset[Grant]:
    return frozenset(Grant(str(g), str(p), bool(o)) for g, p, o in rows)


def to(grantee: str, *privileges: str) -> set[Grant]:
    return {Grant(grantee, p) for p in privileges}


# What psycopg's execute() takes.
Statement = sql.SQL | sql.Composed


def role_sql(grantee: str) -> sql.Composable:
    return sql.SQL("PUBLIC") if grantee == PUBLIC else sql.Identifier(grantee)


@dataclass(frozen=True)
class AclFix:
    """What must be granted and revoked to bring `actual` to the wanted state."""

    grant: tuple[Grant, ...]
    revoke: tuple[Grant, ...]
    revoke_grant_option: tuple[Grant, ...]

    def __bool__(self) -> bool:
        return bool(self.grant or self.revoke or self.revoke_grant_option)


def diff(
    actual: frozenset[Grant],
    required: set[Grant],
    *,
    exact: bool = False,
    forbidden: Iterable[tuple[str, str]] = (),
) -> AclFix:
    """Compare `actual` with what is wanted.

    required: grants that must be there (without grant option).
    exact: nothing but `required` may be there.
    forbidden: (grantee, privilege) pairs that must not be there; a privilege of
    `*` forbids every privilege of that grantee.
    """
    held = {(g.grantee, g.privilege) for g in actual}
    wanted = {(g.grantee, g.privilege) for g in required}
    bad = set(forbidden)
    missing = sorted(Grant(g, p) for g, p in wanted - held)
    extra = sorted(
        Grant(g.grantee, g.privilege)
        for g in actual
        if (g.grantee, g.privilege) not in wanted
        and (exact or (g.grantee, g.privilege) in bad or (g.grantee, "*") in bad)
    )
    over = sorted(
        Grant(g.grantee, g.privilege)
        for g in actual
        if g.grantable and (g.grantee, g.privilege) in wanted
    )
    return AclFix(tuple(missing), tuple(extra), tuple(over))


def by_grantee(items: Iterable[Grant]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for g in sorted(items):
        grouped.setdefault(g.grantee, []).append(g.privilege)
    return grouped


# Every privilege keyword aclexplode() can return; only these ever become SQL.
PRIVILEGES = frozenset(
    {
        "SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN",
        "CREATE", "CONNECT", "TEMPORARY", "EXECUTE", "USAGE", "SET", "ALTER SYSTEM",
    }
)  # fmt: skip


def keyword(privilege: str) -> sql.Composable:
    """One privilege as SQL, if it is one PostgreSQL knows."""
    if privilege not in PRIVILEGES:
        raise ValueError(f"unknown privilege {privilege!r}")
    return sql.SQL(privilege)


def _keywords(privileges: list[str]) -> sql.Composable:
    return sql.SQL(", ").join(keyword(p) for p in privileges)


def statements(fix: AclFix, on: sql.Composable, shown: str) -> list[tuple[str, Statement]]:
    """GRANT and REVOKE statements, each with a description, that apply `fix` to `on`.

    `on` is e.g. `DATABASE "odoo"`; `shown` is how messages name it.
    """
    out: list[tuple[str, Statement]] = []
    for grantee, privileges in by_grantee(fix.revoke).items():
        out.append(
            (
                f"revoke {', '.join(privileges)} on {shown} from {grantee}",
                sql.SQL("REVOKE {} ON {} FROM {} CASCADE").format(
                    _keywords(privileges), on, role_sql(grantee)
                ),
            )
        )
    for grantee, privileges in by_grantee(fix.revoke_grant_option).items():
        out.append(
            (
                f"revoke the grant option for {', '.join(privileges)} on {shown} from {grantee}",
                sql.SQL("REVOKE GRANT OPTION FOR {} ON {} FROM {} CASCADE").format(
                    _keywords(privileges), on, role_sql(grantee)
                ),
            )
        )
    for grantee, privileges in by_grantee(fix.grant).items():
        out.append(
            (
                f"grant {', '.join(privileges)} on {shown} to {grantee}",
                sql.SQL("GRANT {} ON {} TO {}").format(
                    _keywords(privileges), on, role_sql(grantee)
                ),
            )
        )
    return out
