"""Phase 4: inside the Odoo database: extensions, the handyman's read and write, and
nobody but odoo creating, truncating or referencing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from dbinit import acl
from dbinit.acl import PUBLIC, Grant, Statement
from dbinit.names import Names
from dbinit.plan.change import (
    NOT_EXTENSION_MEMBER,
    SEQUENCE_RW,
    TABLE_RW,
    USER_SCHEMAS,
    Change,
)
from odbox_common.errors import ToolError

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class OdooDbState:
    extensions: frozenset[str]
    available: frozenset[str]
    # Grants are those to roles other than the object's owner (whose rights come with owning).
    schemas: dict[str, frozenset[Grant]]
    schema_owners: dict[str, str]
    tables: dict[tuple[str, str], frozenset[Grant]]
    sequences: dict[tuple[str, str], frozenset[Grant]]
    # (schema, table, column) -> grants on that column to roles other than the table's owner
    columns: dict[tuple[str, str, str], frozenset[Grant]]
    # (schema or "" for every schema, object type letter) -> grants, for defaults of odoo
    defaults: dict[tuple[str, str], frozenset[Grant]]

    @classmethod
    def fresh(cls, names: Names) -> OdooDbState:
        """What a database just created from template0 holds (for --dry-run)."""
        return cls(
            extensions=frozenset({"plpgsql"}),
            available=frozenset(names.extensions),
            schemas={"public": acl.grants([(PUBLIC, "USAGE", False)])},
            schema_owners={"public": "pg_database_owner"},
            tables={},
            sequences={},
            columns={},
            defaults={},
        )  # fmt: skip

    @classmethod
    def read(cls, conn: psycopg.Connection[Any], names: Names) -> OdooDbState:
        extensions = frozenset(str(r[0]) for r in conn.execute("SELECT extname FROM pg_extension"))
        available = frozenset(
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM pg_available_extensions WHERE name = ANY(%s)",
                [list(names.extensions)],
            )
        )
        schemas: dict[str, list[tuple[str, str, bool]]] = {}
        schema_owners: dict[str, str] = {}
        for nsp, owner, grantee, privilege, grantable in conn.execute(
            f"""
            SELECT n.nspname, pg_get_userbyid(n.nspowner), {acl.GRANTEE_SQL}, a.privilege_type,
                   a.is_grantable
            FROM pg_namespace n
            LEFT JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                ON a.grantee <> n.nspowner
            WHERE {USER_SCHEMAS}
            """  # noqa: S608 (fixed text, no input)
        ):
            schema_owners[str(nsp)] = str(owner)
            entries = schemas.setdefault(str(nsp), [])
            if grantee is not None:
                entries.append((grantee, privilege, grantable))
        relations = conn.execute(
            f"""
            SELECT n.nspname, c.relname, c.relkind, {acl.GRANTEE_SQL}, a.privilege_type,
                   a.is_grantable
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(
                (CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))) a
                ON a.grantee <> c.relowner
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {USER_SCHEMAS}
              AND {NOT_EXTENSION_MEMBER}
            """  # noqa: S608 (fixed text, no input)
        ).fetchall()
        tables: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
        sequences: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
        for nsp, rel, kind, grantee, privilege, grantable in relations:
            into = sequences if kind == "S" else tables
            entries = into.setdefault((str(nsp), str(rel)), [])
            if grantee is not None:
                entries.append((grantee, privilege, grantable))
        columns: dict[tuple[str, str, str], list[tuple[str, str, bool]]] = {}
        for nsp, rel, column, grantee, privilege, grantable in conn.execute(
            f"""
            SELECT n.nspname, c.relname, att.attname, {acl.GRANTEE_SQL}, a.privilege_type,
                   a.is_grantable
            FROM pg_attribute att
            JOIN pg_class c ON c.oid = att.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            CROSS JOIN LATERAL aclexplode(att.attacl) a
            WHERE att.attacl IS NOT NULL AND NOT att.attisdropped AND a.grantee <> c.relowner
              AND {USER_SCHEMAS} AND {NOT_EXTENSION_MEMBER}
            """  # noqa: S608 (fixed text, no input)
        ):
            columns.setdefault((str(nsp), str(rel), str(column)), []).append(
                (grantee, privilege, grantable)
            )
        defaults: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
        for nsp, objtype, grantee, privilege, grantable in conn.execute(
            f"""
            SELECT coalesce(n.nspname, ''), d.defaclobjtype, {acl.GRANTEE_SQL},
                   a.privilege_type, a.is_grantable
            FROM pg_default_acl d
            LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
            CROSS JOIN LATERAL aclexplode(d.defaclacl) a
            WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %s)
              AND d.defaclobjtype IN ('r', 'S', 'n') AND a.grantee <> d.defaclrole
            """,  # noqa: S608 (fixed text; the role name is a parameter)
            [names.odoo],
        ):
            defaults.setdefault((str(nsp), str(objtype)), []).append(
                (grantee, privilege, grantable)
            )
        return cls(
            extensions=extensions,
            available=available,
            schemas={k: acl.grants(v) for k, v in schemas.items()},
            schema_owners=schema_owners,
            tables={k: acl.grants(v) for k, v in tables.items()},
            sequences={k: acl.grants(v) for k, v in sequences.items()},
            columns={k: acl.grants(v) for k, v in columns.items()},
            defaults={k: acl.grants(v) for k, v in defaults.items()},
        )


DEFAULT_OBJECTS = {"r": "TABLES", "S": "SEQUENCES", "n": "SCHEMAS"}


def plan_odoo_database(state: OdooDbState, names: Names) -> list[Change]:
    changes: list[Change] = []
    for extension in names.extensions:
        if extension in state.extensions:
            continue
        if extension not in state.available:
            raise ToolError(
                f"extension {extension} is not available on this PostgreSQL server: install "
                "its contrib package (on Debian: postgresql-contrib), then run setup again"
            )
        changes.append(
            Change(
                f"create extension {extension} in database {names.odoo_db}",
                sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension)),
            )
        )
    h, p, odoo = names.handyman, names.pgadmin, names.odoo
    for schema, actual in sorted(state.schemas.items()):
        required = acl.to(h, "USAGE") if names.with_pgadmin else set()
        if schema == "public" and state.schema_owners[schema] not in (odoo, "pg_database_owner"):
            # A dump from PostgreSQL 14 or older: public owned by postgres. Odoo must create there.
            required |= acl.to(odoo, "USAGE", "CREATE")
        # Only odoo and the schema's owner may create; pgadmin and the handyman hold no more
        # than what is required above.
        forbidden = [(g.grantee, "CREATE") for g in actual if g.grantee != odoo]
        forbidden += [(who, "*") for who in (p, h) if who != odoo]
        fix = acl.diff(actual, required, forbidden=forbidden)
        on = sql.SQL("SCHEMA {}").format(sql.Identifier(schema))
        changes += [Change(d, s) for d, s in acl.statements(fix, on, f"schema {schema}")]
    # In Odoo's database only the owner, odoo and the handyman hold rights on tables and
    # sequences: nobody else can connect, and TRUNCATE, REFERENCES and TRIGGER stay with owners.
    for kind, objects, rw, word in (
        ("TABLES", state.tables, TABLE_RW, "table"),
        ("SEQUENCES", state.sequences, SEQUENCE_RW, "sequence"),
    ):
        required = acl.to(h, *rw) if names.with_pgadmin else set()
        lacking: set[str] = set()
        for (schema, name), grants in sorted(objects.items()):
            actual = frozenset(g for g in grants if g.grantee != odoo)
            fix = acl.diff(actual, required, exact=True)
            if fix.grant:
                lacking.add(schema)
            if fix.revoke or fix.revoke_grant_option:
                revoke_only = acl.AclFix((), fix.revoke, fix.revoke_grant_option)
                on = sql.SQL("{} {}.{}").format(
                    sql.SQL(word.upper()), sql.Identifier(schema), sql.Identifier(name)
                )
                changes += [
                    Change(d, s)
                    for d, s in acl.statements(revoke_only, on, f"{word} {schema}.{name}")
                ]
        for schema in sorted(lacking):
            changes.append(
                Change(
                    f"grant {', '.join(rw)} on every {word} in schema {schema} to {h}",
                    sql.SQL("GRANT {} ON ALL {} IN SCHEMA {} TO {}").format(
                        sql.SQL(", ").join(sql.SQL(x) for x in rw),
                        sql.SQL(kind),
                        sql.Identifier(schema),
                        sql.Identifier(h),
                    ),
                )
            )
    # Column grants: table-level grants say it all; nobody else gets a column.
    for (schema, table, column), grants in sorted(state.columns.items()):
        for grant in sorted(g for g in grants if g.grantee != odoo):
            privilege = acl.keyword(grant.privilege)
            changes.append(
                Change(
                    f"revoke {grant.privilege} on column {column} of table {schema}.{table} "
                    f"from {grant.grantee}",
                    sql.SQL("REVOKE {} ({}) ON TABLE {}.{} FROM {} CASCADE").format(
                        privilege,
                        sql.Identifier(column),
                        sql.Identifier(schema),
                        sql.Identifier(table),
                        acl.role_sql(grant.grantee),
                    ),
                )
            )
    wanted_defaults = (
        {
            ("", "r"): acl.to(h, *TABLE_RW),
            ("", "S"): acl.to(h, *SEQUENCE_RW),
            ("", "n"): acl.to(h, "USAGE"),
        }
        if names.with_pgadmin
        else {}
    )
    for key in sorted(set(wanted_defaults) | set(state.defaults)):
        schema, objtype = key
        fix = acl.diff(state.defaults.get(key, frozenset()), wanted_defaults.get(key, set()),
                       exact=True)  # fmt: skip
        if not fix:
            continue
        where: Statement = (
            sql.SQL(" IN SCHEMA {}").format(sql.Identifier(schema)) if schema else sql.SQL("")
        )
        prefix = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {}{} ").format(
            sql.Identifier(names.odoo), where
        )
        shown = f"{DEFAULT_OBJECTS[objtype].lower()} {names.odoo} creates" + (
            f" in schema {schema}" if schema else ""
        )
        kind_sql = sql.SQL(DEFAULT_OBJECTS[objtype])
        for description, statement in acl.statements(fix, kind_sql, shown):
            changes.append(
                Change(f"{description} (default privileges)", sql.Composed([prefix, statement]))
            )
    return changes
