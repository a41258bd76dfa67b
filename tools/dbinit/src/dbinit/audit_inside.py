"""`dbinit check` inside the Odoo and pgAdmin databases: who may read, write, create,
truncate, reference and run what there, now and (default privileges) later."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbinit.acl import GRANTEE_SQL
from dbinit.audit_report import (
    OTHERS,
    Cell,
    Report,
    RoleFacts,
    as_shown,
    count_cell,
    first_few,
    part_of,
    yes_no,
)
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

if TYPE_CHECKING:
    import psycopg


class InsideDatabases:
    """The checks inside one database, mixed into `Audit` (which has the names and report)."""

    names: Names
    report: Report

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
            cells[OTHERS] = Cell(first_few(as_shown(able)) if able else "no", not able)
            if able:
                report.drift.append(
                    (others_drift or drift)(first_few(as_shown(able)), facts[able[0]])
                )
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
            lambda f: (yes_no(bool(f["create"])), bool(f["create"])),
            creators,
            lambda who, f: (
                f"{who} can create objects in database {db}: {first_few(f['create'])}"
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
                some = part_of(len(f[key]), total)
                return f"{who} cannot {verb} {some} {noun} in {db}: {first_few(f[key])}"

            any_key = "any_rw" if key == "lacking_rw" else "any_seq"

            def others_drift(who: str, f: dict[str, Any], any_key: str = any_key,
                             noun: str = noun) -> str:  # fmt: skip
                can = "read or write" if noun == "tables" else "use"
                what = count_of(len(f[any_key]), noun[:-1])
                return f"{who} can {can} {what} in {db}: {first_few(f[any_key])}"

            row(
                f"{verb} {db} {noun}",
                lambda f, key=key, total=total: count_cell(total, f[key]),
                everyone,
                drift,
                lambda f, any_key=any_key: bool(f[any_key]),
                others_drift,
            )
        row(
            f"truncate, alter or drop {db} tables",
            lambda f: (
                part_of(len(f["destructive"]), total_tables) if f["destructive"] else "none",
                bool(f["destructive"]),
            ),
            owners,
            lambda who, f: (
                f"{who} can truncate, alter or drop {count_of(len(f['destructive']), 'table')} "
                f"in {db}: {first_few(f['destructive'])}"
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
                f"{function.owner} (SECURITY DEFINER) and "
                f"{first_few(as_shown(list(function.runners)))} "
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
                cells[role] = Cell(yes_no(can), can == wanted[role])
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
            cells[OTHERS] = Cell(first_few(as_shown(able)) if able else "no", not able)
            if able:
                report.drift.append(
                    f"{first_few(as_shown(able))} can run connection_params() in database {db} "
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
