"""`dbinit check`: the privilege matrix as the server sees it, and each drift from what setup makes.

Every cell is asked of PostgreSQL itself (has_database_privilege,
has_table_privilege, pg_has_role, ...), so it counts what a role can really do,
through PUBLIC, memberships and ownership, not just what setup granted. The
column "other roles" stands for PUBLIC (every role, including roles created
tomorrow) and every login role that is neither managed nor a superuser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dbinit import provision
from dbinit.connect import Target, connect, require_superuser
from dbinit.names import Names
from odbox_common.errors import ToolError

if TYPE_CHECKING:
    import psycopg

from dbinit.audit_inside import InsideDatabases
from dbinit.audit_report import OTHERS, Cell, Report, RoleFacts, as_shown, first_few, yes_no


class Audit(InsideDatabases):
    def __init__(self, target: Target, names: Names) -> None:
        self.target = target
        self.names = names
        columns = [names.admin, names.odoo]
        if names.with_pgadmin:
            columns.append(names.pgadmin)
        columns.append(OTHERS)
        self.report = Report(target.where, names, columns)

    # ------------------------------------------------------------ cluster-wide facts

    def run(self) -> Report:
        names, report = self.names, self.report
        with connect(self.target) as conn:
            require_superuser(conn, "check")
            roles = self._roles(conn)
            others = self._other_roles(conn)
            self._attributes(roles)
            self._memberships(conn)
            databases = self._databases(conn)
            self._connect_rows(conn, roles, others, databases)
        if names.odoo_db in databases:
            with connect(self.target.to(names.odoo_db)) as conn:
                self._inside_odoo(conn, roles, others)
                self._definer_functions(conn, names.odoo_db)
        if names.with_pgadmin and names.pgadmin_db in databases:
            with connect(self.target.to(names.pgadmin_db)) as conn:
                self._inside_pgadmin(conn, roles, others)
        if report.ok:
            self._what_setup_would_do()
        return report

    def _what_setup_would_do(self) -> None:
        """Whatever setup would change is drift, even where check has no words of its own."""
        try:
            planned = provision.Setup(self.target, self.names, dry_run=True, lock=False).run()
        except ToolError as e:
            self.report.drift.append(f"setup would fail: {e}")
            return
        self.report.drift += [f"setup would {change}" for change in planned.changes]

    def _roles(self, conn: psycopg.Connection[Any]) -> dict[str, RoleFacts]:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolcanlogin, rolcreatedb, rolcreaterole, rolreplication,"
            " rolbypassrls, rolpassword IS NOT NULL, rolconnlimit,"
            " (SELECT r.rolconfig FROM pg_roles r WHERE r.oid = pg_authid.oid)"
            " FROM pg_authid WHERE rolname = ANY(%s)",
            [list(self.names.roles)],
        ).fetchall()
        found = {str(r[0]): RoleFacts(str(r[0]), True, *map(bool, r[1:8])) for r in rows}
        for r in rows:
            if r[8] != -1:
                self.report.notes.append(f"{r[0]} may open at most {r[8]} connections")
            if r[9]:
                self.report.notes.append(f"{r[0]} has its own settings: {', '.join(r[9])}")
        for role in self.names.roles:
            if role not in found:
                self.report.drift.append(f"role {role} does not exist: run `dbinit setup`")
                found[role] = RoleFacts(role, False)
        return found

    def _other_roles(self, conn: psycopg.Connection[Any]) -> list[str]:
        rows = conn.execute(
            "SELECT rolname, rolsuper FROM pg_roles"
            " WHERE rolcanlogin AND rolname <> ALL(%s) ORDER BY rolname",
            [list(self.names.roles)],
        ).fetchall()
        supers = [str(r[0]) for r in rows if r[1]]
        if supers:
            self.report.notes.append(
                "superusers that setup does not manage (they can do everything): "
                + first_few(supers)
            )
        return ["public", *(str(r[0]) for r in rows if not r[1])]

    def _attributes(self, roles: dict[str, RoleFacts]) -> None:
        names, report = self.names, self.report
        attributes: list[tuple[str, str, Callable[[RoleFacts], bool]]] = [
            ("superuser", "is a superuser", lambda f: f.superuser),
            ("create databases", "can create databases", lambda f: f.createdb),
            ("create roles", "can create roles", lambda f: f.createrole),
            ("replication or bypass RLS", "has REPLICATION or BYPASSRLS",
             lambda f: f.replication or f.bypassrls),
        ]  # fmt: skip
        for label, drift, value in attributes:
            cells: dict[str, Cell] = {}
            for role in report.columns[:-1]:
                facts = roles[role]
                if not facts.exists:
                    cells[role] = Cell("-")
                elif role == names.admin:
                    # A superuser can do everything; only being one is checked.
                    ok = facts.superuser or label != "superuser"
                    cells[role] = Cell(yes_no(value(facts) or facts.superuser), ok)
                    if not ok:
                        report.drift.append(f"{role} is not a superuser")
                else:
                    cells[role] = Cell(yes_no(value(facts)), not value(facts))
                    if value(facts):
                        report.drift.append(f"{role} {drift}")
            cells[OTHERS] = Cell("-")
            report.add(label, cells)
        cells = {}
        for role in report.columns[:-1]:
            facts = roles[role]
            cells[role] = Cell(yes_no(facts.login), facts.login) if facts.exists else Cell("-")
            if facts.exists and not facts.login:
                report.drift.append(f"{role} cannot log in")
            if facts.password and role != names.admin:
                report.drift.append(f"{role} has a password; it should log in by peer only")
        cells[OTHERS] = Cell("-")
        report.add("log in", cells)
        if names.with_pgadmin and roles[names.handyman].exists:
            # pgadmin can SET ROLE to the handyman, so its attributes are pgadmin's too.
            handyman = roles[names.handyman]
            for _, drift, value in attributes:
                if value(handyman):
                    report.drift.append(
                        f"{names.handyman} {drift} (and pgadmin can SET ROLE to it)"
                    )
            if handyman.login:
                report.drift.append(f"{names.handyman} can log in; it should be NOLOGIN")

    def _memberships(self, conn: psycopg.Connection[Any]) -> None:
        names = self.names
        managed = (
            [names.odoo, names.pgadmin, names.handyman] if names.with_pgadmin else [names.odoo]
        )
        inherit = "am.inherit_option" if conn.info.server_version >= 160000 else "true"
        rows = conn.execute(
            f"""
            SELECT r.rolname, m.rolname, am.admin_option, {inherit} FROM pg_auth_members am
            JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
            WHERE (r.rolname = ANY(%(m)s) OR m.rolname = ANY(%(m)s))
              AND (NOT m.rolsuper OR m.rolname = ANY(%(m)s))
            """,  # noqa: S608 (fixed text; names are parameters)
            {"m": managed},
        ).fetchall()
        held = {(str(r), str(m)) for r, m, _, _ in rows}
        wanted = {(names.handyman, names.pgadmin)} if names.with_pgadmin else set()
        for role, member in sorted(held - wanted):
            self.report.drift.append(f"{member} is a member of {role} and has its privileges")
        for role, member in sorted(wanted - held):
            self.report.drift.append(
                f"{member} is not a member of {role}, so it cannot read or write Odoo's tables"
            )
        for role, member, admin_option, inherits in rows:
            if (role, member) not in wanted:
                continue
            if admin_option:
                self.report.drift.append(f"{member} may grant {role} to others")
            if not inherits:
                self.report.drift.append(f"{member} does not inherit the privileges of {role}")

    def _databases(self, conn: psycopg.Connection[Any]) -> set[str]:
        names = self.names
        rows = conn.execute(
            "SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding)"
            " FROM pg_database WHERE datname = ANY(%s)",
            [list(names.databases)],
        ).fetchall()
        found = {str(r[0]): (str(r[1]), str(r[2])) for r in rows}
        owners = {names.odoo_db: names.odoo, names.pgadmin_db: names.pgadmin}
        for db in names.databases:
            if db not in found:
                self.report.drift.append(f"database {db} does not exist: run `dbinit setup`")
                continue
            owner, encoding = found[db]
            if owner != owners[db]:
                self.report.drift.append(f"database {db} is owned by {owner}, not {owners[db]}")
            if db == names.odoo_db and encoding != "UTF8":
                line = f"database {db} is {encoding}, not UTF8: dump it, drop it, run setup"
                self.report.drift.append(line)
                self.report.by_hand.append(line)
        return set(found)

    def _connect_rows(
        self,
        conn: psycopg.Connection[Any],
        roles: dict[str, RoleFacts],
        others: list[str],
        databases: set[str],
    ) -> None:
        names = self.names
        wanted = {
            names.odoo_db: {names.admin, names.odoo, names.pgadmin},
            names.pgadmin_db: {names.admin, names.pgadmin},
            "postgres": {names.admin, names.odoo},  # Odoo's start, db listing and bus
        }
        for db in [*names.databases, "postgres"]:
            if db not in databases and db != "postgres":
                continue
            cells: dict[str, Cell] = {}
            for role in self.report.columns[:-1]:
                if not roles[role].exists:
                    cells[role] = Cell("-")
                    continue
                can = self._scalar(
                    conn, "SELECT has_database_privilege(%s, %s, 'CONNECT')", role, db
                )
                ok = can == (role in wanted[db])
                cells[role] = Cell(yes_no(can), ok)
                if not ok:
                    self.report.drift.append(
                        f"{role} {'can' if can else 'cannot'} connect to database {db}"
                    )
            able = [
                r
                for r in others
                if self._scalar(conn, "SELECT has_database_privilege(%s, %s, 'CONNECT')", r, db)
            ]
            # On `postgres`, a role granted CONNECT by name (a monitoring agent) is the admin's
            # business; only PUBLIC, which includes every future role, is drift there.
            flagged = able if db != "postgres" else [r for r in able if r == "public"]
            cells[OTHERS] = Cell(first_few(as_shown(able)) if able else "no", not flagged)
            if flagged:
                self.report.drift.append(
                    f"{first_few(as_shown(flagged))} can connect to database {db}"
                )
            self.report.add(f"connect to {db}", cells)
        if self._scalar(
            conn,
            "SELECT coalesce(bool_or(has_database_privilege('public', oid, 'CONNECT')), false)"
            " FROM pg_database WHERE datname = 'template1'",
        ):
            self.report.drift.append("PUBLIC can connect to database template1")
        if roles[names.odoo].exists:
            for privilege in ("CREATE", "TEMPORARY"):
                if self._scalar(
                    conn, "SELECT has_database_privilege(%s, 'postgres', %s)", names.odoo, privilege
                ):
                    self.report.drift.append(f"{names.odoo} holds {privilege} on database postgres")


def check(target: Target, names: Names) -> Report:
    return Audit(target, names).run()
