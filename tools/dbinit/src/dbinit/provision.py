"""`dbinit setup`: bring roles, databases and grants to the wanted state, and change nothing else.

The work is done in phases; each phase reads the catalog, plans the statements
that close the gap, and runs them in one transaction (CREATE DATABASE cannot run
in one, so it is its own step). A phase with nothing to do runs no statement at
all, so a boot with nothing to change only reads.

1. roles: admin (SUPERUSER LOGIN), odoo and pgadmin (LOGIN and nothing else,
   no password: peer authentication), the handyman (NOLOGIN); pgadmin is a
   member of the handyman and of nothing else.
2. databases: the Odoo and pgAdmin databases, from template0, UTF8, owned by
   their roles.
3. database privileges: CONNECT and TEMPORARY revoked from PUBLIC on every
   database of ours and on `postgres` and `template1`; pgadmin may CONNECT to
   the Odoo database and nothing more; odoo may CONNECT to `postgres` (Odoo's
   server start, database listing and bus connect there) and nothing more.
4. inside the Odoo database: the extensions Odoo wants; the handyman may read
   and write every table and sequence, now and (default privileges) later;
   nobody but odoo may CREATE in its schemas, TRUNCATE, or hold REFERENCES or
   TRIGGER on its tables.
5. inside the pgAdmin database: `dbinit.connection_params()`, which tells
   pgAdmin's setup where the local server's Unix socket is (only superusers may
   read `unix_socket_directories`, so it runs as the admin role), in a schema
   the admin role owns (pgadmin owns `public` and could replace it there).
6. in both databases: nobody but superusers may run a superuser's SECURITY
   DEFINER function (it would lend them the superuser's rights).

Concurrent runs are serialised with an advisory lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import sql

from dbinit import acl
from dbinit.acl import PUBLIC, Grant, Statement
from dbinit.connect import Target, connect, describe, require_superuser
from dbinit.names import Names
from odbox_common.errors import LockHeldError, ToolError, UsageError

if TYPE_CHECKING:
    import psycopg

LOCK_KEY = 0x6462696E6974  # "dbinit"
LOCK_WAIT_SECONDS = 60

ROLE_ATTRIBUTES = (
    ("SUPERUSER", "rolsuper"),
    ("CREATEDB", "rolcreatedb"),
    ("CREATEROLE", "rolcreaterole"),
    ("INHERIT", "rolinherit"),
    ("LOGIN", "rolcanlogin"),
    ("REPLICATION", "rolreplication"),
    ("BYPASSRLS", "rolbypassrls"),
)

NOTHING_ELSE = {
    "SUPERUSER": False,
    "CREATEDB": False,
    "CREATEROLE": False,
    "INHERIT": True,
    "REPLICATION": False,
    "BYPASSRLS": False,
}

TABLE_RW = ("SELECT", "INSERT", "UPDATE", "DELETE")
TABLE_FORBIDDEN = ("TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN")
SEQUENCE_RW = ("USAGE", "SELECT", "UPDATE")
DATABASE_ALL = ("CONNECT", "CREATE", "TEMPORARY")

# `relkind`s that GRANT ... ON ALL TABLES IN SCHEMA covers.
TABLE_KINDS = ("r", "p", "v", "m", "f")

USER_SCHEMAS = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
# Relations an extension made (and owns through its creator) are the extension's business.
NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass"
    " AND e.objid = c.oid AND e.deptype = 'e')"
)

CONNECTION_PARAMS_BODY = """
SELECT jsonb_build_object(
    'host', btrim(split_part(current_setting('unix_socket_directories'), ',', 1), ' "'),
    'port', current_setting('port')::int,
    'sslmode', 'disable'
)
"""


@dataclass(frozen=True)
class Change:
    """What a change does, in words ("create role odoo"), and its statements."""

    description: str
    statement: Statement
    more: tuple[Statement, ...] = ()

    @property
    def statements(self) -> tuple[Statement, ...]:
        return (self.statement, *self.more)


PAST = {"create": "created", "alter": "altered", "remove": "removed", "revoke": "revoked",
        "grant": "granted", "make": "made"}  # fmt: skip


def done(description: str) -> str:
    """ "create role odoo" -> "created role odoo", for the line a change leaves in the journal."""
    verb, _, rest = description.partition(" ")
    return f"{PAST.get(verb, verb)} {rest}"


@dataclass
class Outcome:
    changes: list[str] = field(default_factory=list)
    dry_run: bool = False


def wanted_attributes(names: Names) -> dict[str, dict[str, bool]]:
    wanted = {
        names.admin: {"SUPERUSER": True, "LOGIN": True},
        names.odoo: {**NOTHING_ELSE, "LOGIN": True},
    }
    if names.with_pgadmin:
        wanted[names.pgadmin] = {**NOTHING_ELSE, "LOGIN": True}
        wanted[names.handyman] = {**NOTHING_ELSE, "LOGIN": False}
    return wanted


def _attribute_sql(attributes: dict[str, bool]) -> sql.Composable:
    return sql.SQL(" ").join(
        sql.SQL(name if on else f"NO{name}") for name, on in attributes.items()
    )


def _attribute_words(attributes: dict[str, bool]) -> str:
    return " ".join(name if on else f"NO{name}" for name, on in attributes.items())


# ---------------------------------------------------------------- phase 1: roles


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
                    f"create role {role} ({_attribute_words(attributes)})",
                    sql.SQL("CREATE ROLE {} WITH {}").format(
                        sql.Identifier(role), _attribute_sql(attributes)
                    ),
                )
            )
            continue
        current, has_password = existing[role]
        differ = {a: on for a, on in attributes.items() if current[a] != on}
        if differ:
            changes.append(
                Change(
                    f"alter role {role}: {_attribute_words(differ)}",
                    sql.SQL("ALTER ROLE {} WITH {}").format(
                        sql.Identifier(role), _attribute_sql(differ)
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


# ---------------------------------------------------------------- phase 2: databases


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


# ---------------------------------------------------------------- phase 3: who may connect


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


# ---------------------------------------------------------------- phase 4: inside the Odoo DB


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


# ---------------------------------------------------------------- functions that run as a superuser

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


# ---------------------------------------------------------------- phase 5: the pgAdmin DB

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


def foreign_owned(conn: psycopg.Connection[Any], names: Names, shown: int = 5) -> list[str]:
    """Lines about relations in Odoo's database that odoo does not own (setup leaves them)."""
    rows = conn.execute(
        f"""
        SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_userbyid(c.relowner)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {USER_SCHEMAS}
          AND {NOT_EXTENSION_MEMBER} AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)
        ORDER BY 1
        """,  # noqa: S608 (fixed text; the role name is a parameter)
        [names.odoo],
    ).fetchall()
    lines = [
        f"{name} in database {names.odoo_db} is owned by {owner}, not {names.odoo}, so Odoo "
        f"cannot alter it; setup takes ownership from nobody: run `ALTER TABLE {name} OWNER TO "
        f"{names.odoo}` by hand"
        for name, owner in rows[:shown]
    ]
    if len(rows) > shown:
        lines.append(f"and {len(rows) - shown} more relations in {names.odoo_db} not owned by odoo")
    return lines


def preflight(conn: psycopg.Connection[Any], names: Names) -> None:
    """Raise for what setup cannot do, before it changes anything."""
    plan_databases(conn, names)  # an Odoo database that is not UTF8
    available = {
        str(r[0])
        for r in conn.execute(
            "SELECT name FROM pg_available_extensions WHERE name = ANY(%s)",
            [list(names.extensions)],
        )
    }
    for extension in names.extensions:
        if extension not in available:
            raise ToolError(
                f"extension {extension} is not available on this PostgreSQL server: install "
                "its contrib package (on Debian: postgresql-contrib); nothing was changed"
            )


# ---------------------------------------------------------------- running it


@contextmanager
def _setup_lock(conn: psycopg.Connection[Any], where: str, wait: float) -> Iterator[None]:
    import psycopg

    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(wait * 1000)}ms")))
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
    except psycopg.errors.LockNotAvailable as e:
        raise LockHeldError(
            f"another `dbinit setup` has been running on {where} for over {wait:g} s; "
            "nothing was changed"
        ) from e
    conn.execute("RESET lock_timeout")
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


class Setup:
    """Run the phases against `target` (the maintenance database) for `names`."""

    def __init__(
        self,
        target: Target,
        names: Names,
        *,
        dry_run: bool = False,
        lock_wait: float = LOCK_WAIT_SECONDS,
        report: Callable[[str], None] = lambda _: None,
        warn: Callable[[str], None] = lambda _: None,
        lock: bool = True,
    ) -> None:
        """`lock=False` (for `check`'s dry run only) plans without waiting for a running setup."""
        self.warn = warn
        self.lock = lock
        self.lock_wait = lock_wait
        self.target = target
        self.names = names
        self.dry_run = dry_run
        self.report = report
        self.outcome = Outcome(dry_run=dry_run)

    def _apply(self, conn: psycopg.Connection[Any], changes: list[Change], *, atomic: bool) -> None:

        if not changes:
            return
        if self.dry_run:
            self._apply_dry(changes)
            return
        if not atomic:  # each change on its own (CREATE DATABASE cannot run in a transaction)
            for change in changes:
                self._run(conn, [change], in_transaction=False)
            return
        self._run(conn, changes, in_transaction=True)

    def _run(
        self, conn: psycopg.Connection[Any], changes: list[Change], *, in_transaction: bool
    ) -> None:
        import psycopg

        try:
            with conn.transaction() if in_transaction else contextlib.nullcontext():
                for change in changes:
                    for statement in change.statements:
                        conn.execute(statement)
        except psycopg.Error as e:
            what = changes[0].description if len(changes) == 1 else "make these changes"
            raise ToolError(
                f"setup failed on {self.target.where} while it tried to {what}: "
                f"{describe(e)}; this step was rolled back, the ones before it were made"
            ) from e
        for change in changes:
            self.report(done(change.description))
        self.outcome.changes += [c.description for c in changes]

    def run(self) -> Outcome:
        names = self.names
        with connect(self.target) as conn:
            user = require_superuser(conn, "setup")
            if user in names.roles and user != names.admin:
                raise UsageError(
                    f"setup is connected as {user!r}, a role it would strip of its rights: "
                    "run it as another superuser (e.g. --dsn 'user=postgres')"
                )
            locked = (
                _setup_lock(conn, self.target.where, self.lock_wait)
                if self.lock or not self.dry_run
                else contextlib.nullcontext()
            )
            with locked:
                preflight(conn, names)  # refuse before changing anything
                self._apply(conn, plan_roles(conn, names), atomic=True)
                db_changes, created = plan_databases(conn, names)
                self._apply(conn, db_changes, atomic=False)
                self._apply(conn, plan_database_privileges(conn, names, created), atomic=True)
                self._inside(names.odoo_db, created, self._odoo_db)
                if names.with_pgadmin:
                    self._inside(names.pgadmin_db, created, self._pgadmin_db)
        return self.outcome

    def _inside(
        self,
        db: str,
        created: set[str],
        phase: Callable[[psycopg.Connection[Any] | None], None],
    ) -> None:
        if self.dry_run and db in created:
            phase(None)
            return
        with connect(self.target.to(db)) as conn:
            phase(conn)

    def _odoo_db(self, conn: psycopg.Connection[Any] | None) -> None:
        if conn is not None:
            for line in foreign_owned(conn, self.names):
                self.warn(line)
        state = OdooDbState.read(conn, self.names) if conn else OdooDbState.fresh(self.names)
        changes = plan_odoo_database(state, self.names)
        changes += plan_definer_functions(conn, self.names.odoo_db)
        if conn is None:
            self._apply_dry(changes)
        else:
            self._apply(conn, changes, atomic=True)

    def _pgadmin_db(self, conn: psycopg.Connection[Any] | None) -> None:
        changes = plan_pgadmin_database(conn, self.names)
        if conn is None:
            self._apply_dry(changes)
        else:
            self._apply(conn, changes, atomic=True)

    def _apply_dry(self, changes: list[Change]) -> None:
        for change in changes:
            self.report("would " + change.description)
        self.outcome.changes += [c.description for c in changes]
