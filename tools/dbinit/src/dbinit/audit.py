"""`dbinit check`: the privilege matrix as the server sees it, and each drift from what setup makes.

Every cell is asked of PostgreSQL itself (has_database_privilege,
has_table_privilege, pg_has_role, ...), so it counts what a role can really do,
through PUBLIC, memberships and ownership, not just what setup granted. The
column "other roles" stands for PUBLIC (every role, including roles created
tomorrow) and every login role that is neither managed nor a superuser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbinit import provision
from dbinit.acl import GRANTEE_SQL
from dbinit.connect import Target, connect, require_superuser
from dbinit.names import Names
from dbinit.plan.change import (
    NOT_EXTENSION_MEMBER,
    SEQUENCE_RW,
    TABLE_FORBIDDEN,
    TABLE_RW,
    USER_SCHEMAS,
)
from dbinit.plan.functions import definer_functions
from dbinit.plan.pgadmin_db import (
    OLD_PARAMS_FUNCTION,
    PARAMS_FUNCTION,
    PARAMS_SCHEMA,
    PgadminDbState,
)
from dbinit.provision import foreign_owned
from odbox_common.console import count_of
from odbox_common.errors import ToolError

if TYPE_CHECKING:
    import psycopg

OTHERS = "other roles"
SHOWN_NAMES = 5


@dataclass
class Cell:
    text: str
    ok: bool = True


@dataclass
class Report:
    where: str
    names: Names
    columns: list[str]
    rows: list[tuple[str, dict[str, Cell]]] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The drift setup cannot repair (ownership, an encoding): a human must act.
    by_hand: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drift

    def add(self, capability: str, cells: dict[str, Cell]) -> None:
        self.rows.append((capability, cells))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,  # dbinit.cli.JSON_SCHEMA
            "server": self.where,
            "ok": self.ok,
            "columns": self.columns,
            "matrix": [
                {
                    "capability": capability,
                    "cells": {c: {"value": cell.text, "ok": cell.ok} for c, cell in cells.items()},
                }
                for capability, cells in self.rows
            ],
            "drift": self.drift,
            "by_hand": self.by_hand,
            "notes": self.notes,
        }


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_NAMES])
    return shown + (f" and {len(items) - SHOWN_NAMES} more" if len(items) > SHOWN_NAMES else "")


@dataclass(frozen=True)
class RoleFacts:
    name: str
    exists: bool
    superuser: bool = False
    login: bool = False
    createdb: bool = False
    createrole: bool = False
    replication: bool = False
    bypassrls: bool = False
    password: bool = False


class Audit:
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
                f"superusers that setup does not manage (they can do everything): {_some(supers)}"
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
                    cells[role] = Cell(_yes(value(facts) or facts.superuser), ok)
                    if not ok:
                        report.drift.append(f"{role} is not a superuser")
                else:
                    cells[role] = Cell(_yes(value(facts)), not value(facts))
                    if value(facts):
                        report.drift.append(f"{role} {drift}")
            cells[OTHERS] = Cell("-")
            report.add(label, cells)
        cells = {}
        for role in report.columns[:-1]:
            facts = roles[role]
            cells[role] = Cell(_yes(facts.login), facts.login) if facts.exists else Cell("-")
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
                cells[role] = Cell(_yes(can), ok)
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
            cells[OTHERS] = Cell(_some(_shown(able)) if able else "no", not flagged)
            if flagged:
                self.report.drift.append(f"{_some(_shown(flagged))} can connect to database {db}")
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

    @staticmethod
    def _scalar(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
        row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    # ------------------------------------------------------------ inside the Odoo database

    def _inside_odoo(
        self, conn: psycopg.Connection[Any], roles: dict[str, RoleFacts], others: list[str]
    ) -> None:
        names, report = self.names, self.report
        db = names.odoo_db
        extensions = {str(r[0]) for r in conn.execute("SELECT extname FROM pg_extension")}
        for extension in names.extensions:
            if extension not in extensions:
                report.drift.append(f"extension {extension} is missing in database {db}")
        columns = [r for r in report.columns[:-1] if roles[r].exists]
        facts = {role: self._object_facts(conn, role) for role in [*columns, *others]}
        any_facts = next(iter(facts.values()))  # the totals do not depend on the role
        total_tables, total_sequences = any_facts["tables"], any_facts["sequences"]

        def row(
            capability: str,
            value: Any,
            wanted: dict[str, bool | None],
            drift: Any,
            others_can: Any = None,
            others_drift: Any = None,
        ) -> None:
            cells: dict[str, Cell] = {}
            for role in report.columns[:-1]:
                if role not in facts:
                    cells[role] = Cell("-")
                    continue
                text, has = value(facts[role])
                ok = wanted[role] is None or has == wanted[role]
                cells[role] = Cell(text, ok)
                if not ok:
                    report.drift.append(drift(role, facts[role]))
            able = [r for r in others if (others_can or (lambda f: value(f)[1]))(facts[r])]
            if "public" in able:
                able = ["public"]  # every role has it; naming them all is noise
            cells[OTHERS] = Cell(_some(_shown(able)) if able else "no", not able)
            if able:
                report.drift.append((others_drift or drift)(_some(_shown(able)), facts[able[0]]))
            report.add(capability, cells)

        everyone: dict[str, bool | None] = {
            names.admin: True,
            names.odoo: True,
            names.pgadmin: True,
        }
        creators: dict[str, bool | None] = {
            names.admin: True,
            names.odoo: True,
            names.pgadmin: False,
        }
        # Owners may alter what they own; only pgadmin (and others) must not.
        owners: dict[str, bool | None] = {names.admin: None, names.odoo: None, names.pgadmin: False}
        row(
            f"create objects in {db}",
            lambda f: (_yes(bool(f["create"])), bool(f["create"])),
            creators,
            lambda who, f: (
                f"{who} can create objects in database {db}: {_some(f['create'])}"
                if f["create"]
                else f"{who} cannot create objects in database {db}"
            ),
        )
        for key, total, verb, noun in (
            ("lacking_rw", total_tables, "read and write", "tables"),
            ("lacking_seq", total_sequences, "use", "sequences"),
        ):

            def drift(who: str, f: dict[str, Any], key: str = key, total: int = total,
                      verb: str = verb, noun: str = noun) -> str:  # fmt: skip
                if not f[key]:
                    return f"{who} can {verb} {noun} in {db}"
                return (
                    f"{who} cannot {verb} {_of(len(f[key]), total)} {noun} in {db}: {_some(f[key])}"
                )

            any_key = "any_rw" if key == "lacking_rw" else "any_seq"

            def others_drift(who: str, f: dict[str, Any], any_key: str = any_key,
                             noun: str = noun) -> str:  # fmt: skip
                can = "read or write" if noun == "tables" else "use"
                what = count_of(len(f[any_key]), noun[:-1])
                return f"{who} can {can} {what} in {db}: {_some(f[any_key])}"

            row(
                f"{verb} {db} {noun}",
                lambda f, key=key, total=total: _count(total, f[key]),
                everyone,
                drift,
                lambda f, any_key=any_key: bool(f[any_key]),
                others_drift,
            )
        row(
            f"truncate, alter or drop {db} tables",
            lambda f: (
                _of(len(f["destructive"]), total_tables) if f["destructive"] else "none",
                bool(f["destructive"]),
            ),
            owners,
            lambda who, f: (
                f"{who} can truncate, alter or drop {count_of(len(f['destructive']), 'table')} "
                f"in {db}: {_some(f['destructive'])}"
            ),
        )
        if names.with_pgadmin and names.pgadmin in facts:
            self._future_objects(conn)
        if roles[names.odoo].exists and self._scalar(
            conn,
            "SELECT NOT has_schema_privilege(%s, oid, 'CREATE') FROM pg_namespace"
            " WHERE nspname = 'public'",
            names.odoo,
        ):
            report.drift.append(f"{names.odoo} cannot create tables in schema public of {db}")
        for line in foreign_owned(conn, names):
            report.drift.append(line)
            report.by_hand.append(line)
        strangers = conn.execute(
            f"""
            SELECT DISTINCT {GRANTEE_SQL}, d.defaclobjtype
            FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) a
            WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %s)
              AND a.grantee <> d.defaclrole
              AND a.grantee NOT IN (SELECT oid FROM pg_roles WHERE rolname = ANY(%s))
            ORDER BY 1, 2
            """,  # noqa: S608 (fixed text; names are parameters)
            [names.odoo, [names.handyman] if names.with_pgadmin else []],
        ).fetchall()
        kinds = {"r": "tables", "S": "sequences", "n": "schemas", "f": "functions", "T": "types"}
        for grantee, objtype in strangers:
            if grantee == "PUBLIC" and objtype in ("f", "T"):
                continue  # PostgreSQL's own default: PUBLIC may call functions and use types
            report.drift.append(
                f"{'PUBLIC' if grantee == 'PUBLIC' else grantee} will get rights on the "
                f"{kinds.get(str(objtype), str(objtype))} {names.odoo} creates from now on "
                "(default privileges)"
            )

    # ------------------------------------------------------------ functions

    def _definer_functions(self, conn: psycopg.Connection[Any], db: str, skip: Any = ()) -> None:
        for function in definer_functions(conn, skip):
            self.report.drift.append(
                f"function {function.signature} in database {db} runs as superuser "
                f"{function.owner} (SECURITY DEFINER) and {_some(_shown(list(function.runners)))} "
                "can run it"
            )

    def _inside_pgadmin(
        self, conn: psycopg.Connection[Any], roles: dict[str, RoleFacts], others: list[str]
    ) -> None:
        names, report = self.names, self.report
        db = names.pgadmin_db
        state = PgadminDbState.read(conn, names)
        where = f"schema {PARAMS_SCHEMA} of database {db}, which holds connection_params()"
        if state.schema_owner is None:
            report.drift.append(f"{where} does not exist: run `dbinit setup`")
        elif state.schema_owner != names.admin:
            report.drift.append(
                f"{state.schema_owner} owns {where}, so it could replace the function"
            )
        for grant in sorted(state.schema_grants):
            if (grant.grantee, grant.privilege) != (names.pgadmin, "USAGE"):
                report.drift.append(f"{grant.grantee} has {grant.privilege} on {where}")
        if state.schema_owner not in (None, names.pgadmin) and not any(
            g.grantee == names.pgadmin for g in state.schema_grants
        ):
            report.drift.append(f"{names.pgadmin} cannot use {where}")
        if differs := state.function_differs(names):
            report.drift.append(
                f"connection_params() in database {db} is not the one setup makes: "
                + "; ".join(differs)
            )
        skip = {PARAMS_FUNCTION}
        if state.old_function_owner == names.admin:
            skip.add(OLD_PARAMS_FUNCTION)
            report.drift.append(
                f"{OLD_PARAMS_FUNCTION} in database {db} is left from an older dbinit: "
                "run `dbinit setup`"
            )
        if state.function is not None:
            cells: dict[str, Cell] = {}
            wanted = {names.admin: True, names.odoo: False, names.pgadmin: True}
            for role in report.columns[:-1]:
                if not roles[role].exists:
                    cells[role] = Cell("-")
                    continue
                can = bool(self._scalar(
                    conn, "SELECT has_function_privilege(%s, %s, 'EXECUTE')", role, PARAMS_FUNCTION
                ))  # fmt: skip
                cells[role] = Cell(_yes(can), can == wanted[role])
                if can != wanted[role]:
                    report.drift.append(
                        f"{role} {'can' if can else 'cannot'} run connection_params() "
                        f"in database {db}"
                    )
            able = [
                r
                for r in others
                if self._scalar(
                    conn, "SELECT has_function_privilege(%s, %s, 'EXECUTE')", r, PARAMS_FUNCTION
                )
            ]
            if "public" in able:
                able = ["public"]
            cells[OTHERS] = Cell(_some(_shown(able)) if able else "no", not able)
            if able:
                report.drift.append(
                    f"{_some(_shown(able))} can run connection_params() in database {db} "
                    f"(it reads the server's settings as {names.admin})"
                )
            report.add("run connection_params()", cells)
        self._definer_functions(conn, db, skip)

    def _object_facts(self, conn: psycopg.Connection[Any], role: str) -> dict[str, Any]:
        rw = " AND ".join(f"has_table_privilege(%(r)s, c.oid, '{p}')" for p in TABLE_RW)
        seq = " AND ".join(f"has_sequence_privilege(%(r)s, c.oid, '{p}')" for p in SEQUENCE_RW)
        bad = " OR ".join(
            f"has_table_privilege(%(r)s, c.oid, '{p}')"
            for p in TABLE_FORBIDDEN
            if p != "MAINTAIN" or conn.info.server_version >= 170000
        )
        bad += " OR has_any_column_privilege(%(r)s, c.oid, 'REFERENCES')"
        # Any access at all, a single column's included.
        touch = " OR ".join(
            [f"has_any_column_privilege(%(r)s, c.oid, '{p}')" for p in ("SELECT", "INSERT",
             "UPDATE", "REFERENCES")] + [f"has_table_privilege(%(r)s, c.oid, '{p}')"
             for p in ("DELETE", "TRUNCATE", "TRIGGER")]
        )  # fmt: skip
        seq_touch = " OR ".join(f"has_sequence_privilege(%(r)s, c.oid, '{p}')" for p in SEQUENCE_RW)
        name = "quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
        is_role = role != "public"
        row = conn.execute(
            f"""
            SELECT count(*) FILTER (WHERE c.relkind <> 'S'),
                   coalesce(array_agg({name} ORDER BY 1)
                            FILTER (WHERE c.relkind <> 'S' AND NOT ({rw})), '{{}}'),
                   coalesce(array_agg({name} ORDER BY 1)
                            FILTER (WHERE c.relkind <> 'S' AND (({bad}) OR CASE WHEN %(is_role)s
                                    THEN pg_has_role(%(r)s, c.relowner, 'USAGE') END)), '{{}}'),
                   count(*) FILTER (WHERE c.relkind = 'S'),
                   coalesce(array_agg({name} ORDER BY 1)
                            FILTER (WHERE c.relkind = 'S' AND NOT ({seq})), '{{}}'),
                   coalesce(array_agg({name} ORDER BY 1)
                            FILTER (WHERE c.relkind <> 'S' AND ({touch})), '{{}}'),
                   coalesce(array_agg({name} ORDER BY 1)
                            FILTER (WHERE c.relkind = 'S' AND ({seq_touch})), '{{}}')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {USER_SCHEMAS}
              AND {NOT_EXTENSION_MEMBER}
            """,  # noqa: S608 (fixed text; the role is a parameter)
            {"r": role, "is_role": is_role},
        ).fetchone()
        assert row is not None
        create = conn.execute(
            f"""
            SELECT (SELECT CASE WHEN has_database_privilege(%(r)s, current_database(), 'CREATE')
                                THEN ARRAY['new schemas'] ELSE '{{}}' END)
                || (SELECT CASE WHEN has_database_privilege(%(r)s, current_database(), 'TEMP')
                                THEN ARRAY['temporary tables'] ELSE '{{}}' END)
                || coalesce((SELECT array_agg('schema ' || quote_ident(n.nspname) ORDER BY 1)
                             FROM pg_namespace n
                             WHERE {USER_SCHEMAS} AND has_schema_privilege(%(r)s, n.oid, 'CREATE')),
                            '{{}}')
            """,  # noqa: S608 (fixed text; the role is a parameter)
            {"r": role},
        ).fetchone()
        assert create is not None
        return {
            "tables": int(row[0]),
            "lacking_rw": list(row[1]),
            "destructive": list(row[2]),
            "sequences": int(row[3]),
            "lacking_seq": list(row[4]),
            "any_rw": list(row[5]),
            "any_seq": list(row[6]),
            "create": list(create[0]),
        }

    def _future_objects(self, conn: psycopg.Connection[Any]) -> None:
        """Does pgadmin get read/write on what odoo creates later (default privileges)?"""
        names, report = self.names, self.report
        cells = {role: Cell("-") for role in report.columns}
        problems: list[str] = []
        for objtype, word, wanted in (
            ("r", "tables", set(TABLE_RW)),
            ("S", "sequences", set(SEQUENCE_RW)),
            ("n", "schemas", {"USAGE"}),
        ):
            # Wanted: for every schema. Too much: in any schema, directly, through a
            # membership, or through PUBLIC.
            row = conn.execute(
                """
                SELECT coalesce(array_agg(DISTINCT a.privilege_type)
                                FILTER (WHERE d.defaclnamespace = 0), '{}'),
                       coalesce(array_agg(DISTINCT a.privilege_type), '{}')
                FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) a
                WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %(odoo)s)
                  AND d.defaclobjtype = %(t)s AND a.grantee <> d.defaclrole
                  AND CASE WHEN a.grantee = 0 THEN true
                           ELSE pg_has_role(%(p)s, a.grantee, 'USAGE') END
                """,
                {"odoo": names.odoo, "t": objtype, "p": names.pgadmin},
            ).fetchone()
            assert row is not None
            held, anywhere = set(row[0]), set(row[1])
            if wanted - held:
                problems.append(
                    f"{names.pgadmin} will not get {', '.join(sorted(wanted - held))} on the "
                    f"{word} {names.odoo} creates from now on (default privileges)"
                )
            if extra := anywhere - wanted:
                problems.append(
                    f"{names.pgadmin} will get {', '.join(sorted(extra))} on the {word} "
                    f"{names.odoo} creates from now on (default privileges)"
                )
        cells[names.pgadmin] = Cell("yes" if not problems else "differs", not problems)
        report.drift += problems
        report.add(f"read and write what {names.odoo} creates later", cells)


def _count(total: int, lacking: list[str]) -> tuple[str, bool]:
    if not lacking:
        return (f"all ({total})" if total else "all (none yet)", True)
    if len(lacking) == total:
        return ("none", False)
    return (_of(total - len(lacking), total), False)


def _of(part: int, total: int) -> str:
    return f"{part} of {total}"


def _shown(roles: list[str]) -> list[str]:
    return ["PUBLIC" if r == "public" else r for r in roles]


def check(target: Target, names: Names) -> Report:
    return Audit(target, names).run()
