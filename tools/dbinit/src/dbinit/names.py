"""The roles and databases dbinit manages, and the rules their names must follow.

Names reach SQL only as quoted identifiers (psycopg.sql.Identifier), never
pasted in. On top of that, a name must look like a system user name, because
on the box each login role is reached by peer authentication from the system
user of the same name: lower-case letters, digits, `_` and `-`, starting with a
letter or `_`, at most 63 bytes (PostgreSQL silently cuts longer names, which
would make two names one). Anything else is refused before any connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from odbox_common.errors import UsageError

MAX_NAME_BYTES = 63  # NAMEDATALEN - 1
_NAME = re.compile(r"[a-z_][a-z0-9_-]*")

# Role names PostgreSQL reserves or gives a meaning of its own.
RESERVED_ROLES = frozenset({"public", "none", "current_role", "current_user", "session_user"})
# Databases that belong to PostgreSQL itself.
SYSTEM_DATABASES = frozenset({"postgres", "template0", "template1"})

DEFAULT_EXTENSIONS = ("pg_trgm", "unaccent")


def check_name(name: str, what: str) -> str:
    """Return `name` if it is acceptable as a role or database name, else raise UsageError."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"{what} {name!r} is not a valid name: use lower-case letters, digits, '_' and '-', "
            "starting with a letter or '_'"
        )
    if len(name.encode()) > MAX_NAME_BYTES:
        raise UsageError(
            f"{what} {name!r} is longer than the {MAX_NAME_BYTES} bytes PostgreSQL allows in a name"
        )
    return name


def check_role(name: str, what: str) -> str:
    check_name(name, what)
    if name in RESERVED_ROLES or name.startswith("pg_"):
        raise UsageError(f"{what} {name!r} is reserved by PostgreSQL: choose another name")
    return name


def check_database(name: str, what: str) -> str:
    check_name(name, what)
    if name in SYSTEM_DATABASES:
        raise UsageError(f"{what} {name!r} is one of PostgreSQL's own databases")
    return name


def check_extension(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]*", name) or len(name) > MAX_NAME_BYTES:  # uuid-ossp
        raise UsageError(f"extension {name!r} is not a valid extension name")
    return name


@dataclass(frozen=True)
class Names:
    """Everything `setup` and `check` manage. Build it with `Names.make`, which validates."""

    admin: str = "admin"
    odoo: str = "odoo"
    odoo_db: str = "odoo"
    pgadmin: str = "pgadmin"
    pgadmin_db: str = "pgadmin"
    handyman: str = "odoo_handyman"
    with_pgadmin: bool = True
    extensions: tuple[str, ...] = field(default=DEFAULT_EXTENSIONS)

    @classmethod
    def make(
        cls,
        *,
        admin: str = "admin",
        odoo: str = "odoo",
        odoo_db: str = "odoo",
        pgadmin: str = "pgadmin",
        pgadmin_db: str = "pgadmin",
        handyman: str | None = None,
        with_pgadmin: bool = True,
        extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
    ) -> Names:
        handyman = handyman if handyman is not None else f"{odoo}_handyman"
        names = cls(
            admin=check_role(admin, "admin role"),
            odoo=check_role(odoo, "Odoo role"),
            odoo_db=check_database(odoo_db, "Odoo database"),
            pgadmin=check_role(pgadmin, "pgAdmin role"),
            pgadmin_db=check_database(pgadmin_db, "pgAdmin database"),
            handyman=check_role(handyman, "handyman role"),
            with_pgadmin=with_pgadmin,
            extensions=tuple(dict.fromkeys(check_extension(e) for e in extensions)),
        )
        roles = [("admin role", admin), ("Odoo role", odoo)]
        if with_pgadmin:
            roles += [("pgAdmin role", pgadmin), ("handyman role", names.handyman)]
        seen: dict[str, str] = {}
        for what, name in roles:
            if name in seen:
                raise UsageError(
                    f"the {seen[name]} and the {what} are both {name!r}: each needs its own role"
                )
            seen[name] = what
        if with_pgadmin and odoo_db == pgadmin_db:
            raise UsageError(
                f"the Odoo and pgAdmin databases are both {odoo_db!r}: each needs its own"
            )
        return names

    @property
    def login_roles(self) -> tuple[str, ...]:
        if self.with_pgadmin:
            return (self.admin, self.odoo, self.pgadmin)
        return (self.admin, self.odoo)

    @property
    def roles(self) -> tuple[str, ...]:
        if self.with_pgadmin:
            return (*self.login_roles, self.handyman)
        return self.login_roles

    @property
    def databases(self) -> tuple[str, ...]:
        if self.with_pgadmin:
            return (self.odoo_db, self.pgadmin_db)
        return (self.odoo_db,)
