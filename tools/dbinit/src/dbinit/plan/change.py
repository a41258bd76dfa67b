"""What every planner returns (a `Change`) and the privileges and attributes they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from psycopg import sql

from dbinit.acl import Statement
from dbinit.names import Names

if TYPE_CHECKING:
    pass


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


USER_SCHEMAS = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
# Relations an extension made (and owns through its creator) are the extension's business.
NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass"
    " AND e.objid = c.oid AND e.deptype = 'e')"
)


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


def attribute_sql(attributes: dict[str, bool]) -> sql.Composable:
    return sql.SQL(" ").join(
        sql.SQL(name if on else f"NO{name}") for name, on in attributes.items()
    )


def attribute_words(attributes: dict[str, bool]) -> str:
    return " ".join(name if on else f"NO{name}" for name, on in attributes.items())
