"""Phase 1: the roles, their attributes, and who is a member of whom."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import sql

from dbinit.names import Names
from dbinit.plan.change import (
    ROLE_ATTRIBUTES,
    Change,
    attribute_sql,
    attribute_words,
    wanted_attributes,
)

if TYPE_CHECKING:
    import psycopg


def plan_roles(conn: psycopg.Connection[Any], names: Names) -> list[Change]:
    wanted = wanted_attributes(names)
    columns = sql.SQL(", ").join(sql.Identifier(col) for _, col in ROLE_ATTRIBUTES)
    rows = conn.execute(
        sql.SQL(
            "SELECT rolname, {}, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = ANY(%s)"
        ).format(columns),
        [list(wanted)],
    ).fetchall()
    existing = {
        str(row[0]): (
            {attr: bool(v) for (attr, _), v in zip(ROLE_ATTRIBUTES, row[1:-1], strict=True)},
            bool(row[-1]),
        )
        for row in rows
    }
    changes: list[Change] = []
    for role, attributes in wanted.items():
        if role not in existing:
            changes.append(
                Change(
                    f"create role {role} ({attribute_words(attributes)})",
                    sql.SQL("CREATE ROLE {} WITH {}").format(
                        sql.Identifier(role), attribute_sql(attributes)
                    ),
                )
            )
            continue
        current, has_password = existing[role]
        differ = {a: on for a, on in attributes.items() if current[a] != on}
        if differ:
            changes.append(
                Change(
                    f"alter role {role}: {attribute_words(differ)}",
                    sql.SQL("ALTER ROLE {} WITH {}").format(
                        sql.Identifier(role), attribute_sql(differ)
                    ),
                )
            )
        if has_password and role != names.admin:
            changes.append(
                Change(
                    f"remove the password of role {role} (it logs in by peer authentication)",
                    sql.SQL("ALTER ROLE {} WITH PASSWORD NULL").format(sql.Identifier(role)),
                )
            )
    return changes + _plan_memberships(conn, names)


def _plan_memberships(conn: psycopg.Connection[Any], names: Names) -> list[Change]:
    managed = [names.odoo, names.pgadmin, names.handyman] if names.with_pgadmin else [names.odoo]
    pg16 = conn.info.server_version >= 160000  # one grant per grantor, with an INHERIT option
    inherit = "am.inherit_option" if pg16 else "true"
    rows = conn.execute(
        f"""
        SELECT r.rolname, m.rolname, g.rolname, m.rolsuper, am.admin_option, {inherit}
        FROM pg_auth_members am
        JOIN pg_roles r ON r.oid = am.roleid
        JOIN pg_roles m ON m.oid = am.member
        LEFT JOIN pg_roles g ON g.oid = am.grantor
        WHERE r.rolname = ANY(%(managed)s) OR m.rolname = ANY(%(managed)s)
        """,  # noqa: S608 (fixed text; names are parameters)
        {"managed": managed},
    ).fetchall()
    wanted = {(names.handyman, names.pgadmin)} if names.with_pgadmin else set()
    held = {(str(r), str(m)) for r, m, *_ in rows}
    changes: list[Change] = []
    for role, member, grantor, member_is_super, admin_option, inherits in rows:
        role_id, member_id = sql.Identifier(role), sql.Identifier(member)
        by = sql.SQL(" GRANTED BY {}").format(sql.Identifier(grantor)) if pg16 and grantor else None
        if (role, member) in wanted:
            if admin_option:
                changes.append(
                    Change(
                        f"revoke {member}'s right to grant {role} to others",
                        sql.SQL("REVOKE ADMIN OPTION FOR {} FROM {}{} CASCADE").format(
                            role_id, member_id, by or sql.SQL("")
                        ),
                    )
                )
            if not inherits:
                changes.append(
                    Change(
                        f"make {member} inherit the privileges of {role}",
                        sql.SQL("GRANT {} TO {} WITH INHERIT TRUE{}").format(
                            role_id, member_id, by or sql.SQL("")
                        ),
                    )
                )
            continue
        # A superuser gains nothing from membership, and admins often join odoo to SET ROLE;
        # the managed roles are never superusers (phase 1 has just made sure of that).
        if member_is_super and member not in managed:
            continue
        changes.append(
            Change(
                f"revoke membership of {member} in {role}",
                sql.SQL("REVOKE {} FROM {}{} CASCADE").format(
                    role_id, member_id, by or sql.SQL("")
                ),
            )
        )
    for role, member in sorted(wanted - held):
        changes.append(
            Change(
                f"make {member} a member of {role}",
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(member)),
            )
        )
    return changes
