"""Which server dbinit talks to, and connecting to it with one-line errors.

libpq's own rules apply: a `--dsn` (a connection string or URI) and the
standard `PG*` variables. Two defaults differ from bare libpq, because
dbinit's one job is the local server as the box runs it:

- no host given (neither in the DSN nor PGHOST): the Unix socket folder of
  the local server, the first of /run/postgresql (NixOS), /var/run/postgresql
  (Debian) and /tmp that holds the server's socket. The libpq bundled with
  psycopg's binary wheel would otherwise look only in /tmp.
- no database given: `postgres`, the maintenance database, instead of a
  database named after the user.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odbox_common.errors import ToolError, UsageError

if TYPE_CHECKING:
    import psycopg

# Where servers put their socket; only read, never written (hence S108 is moot).
SOCKET_DIRS = ("/run/postgresql", "/var/run/postgresql", "/tmp")  # noqa: S108
MAINTENANCE_DB = "postgres"


class ConnectError(ToolError):
    """The server could not be reached or refused us."""


class NoSuchTarget(ConnectError, UsageError):
    """The database or role the connection names does not exist: the command line's to fix
    (exit 2, as a missing repository or an unknown name is in every tool)."""


@dataclass(frozen=True)
class Target:
    """A resolved connection: libpq keywords, plus a short description for messages."""

    params: dict[str, str]

    @property
    def where(self) -> str:
        host = self.params.get("host", "")
        port = self.params.get("port", "5432")
        if host.startswith("/"):
            return f"{host}/.s.PGSQL.{port}"
        return f"{host}:{port}"

    @property
    def dbname(self) -> str:
        return self.params.get("dbname", MAINTENANCE_DB)

    def to(self, dbname: str) -> Target:
        return Target({**self.params, "dbname": dbname})

    def conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **self.params)


def _default_socket_dir(port: str) -> str:
    existing = [d for d in SOCKET_DIRS if Path(d).is_dir()]
    for d in existing:
        if Path(d, f".s.PGSQL.{port}").exists():
            return d
    return existing[0] if existing else SOCKET_DIRS[0]


def resolve(dsn: str | None) -> Target:
    """The connection `dsn` and the environment describe, with dbinit's two defaults."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params: dict[str, Any] = conninfo_to_dict(dsn or "")
    except ProgrammingError as e:
        raise UsageError(f"--dsn is not a valid connection string: {_first_line(e)}") from e
    resolved = {k: str(v) for k, v in params.items() if v is not None}
    if resolved.get("password"):
        raise UsageError(
            "--dsn holds a password, which would show in the process list and the journal: "
            "use peer authentication, PGPASSFILE or ~/.pgpass"
        )
    if resolved.get("service") or os.environ.get("PGSERVICE"):
        return Target(resolved)  # a pg_service.conf entry says where: libpq's rules only
    port = resolved.get("port") or os.environ.get("PGPORT") or "5432"
    resolved["port"] = port
    if not (resolved.get("host") or resolved.get("hostaddr") or os.environ.get("PGHOST")):
        resolved["host"] = _default_socket_dir(port)
    elif "host" not in resolved and os.environ.get("PGHOST"):
        resolved["host"] = os.environ["PGHOST"]
    if not (resolved.get("dbname") or os.environ.get("PGDATABASE")):
        resolved["dbname"] = MAINTENANCE_DB
    elif "dbname" not in resolved:
        resolved["dbname"] = os.environ["PGDATABASE"]
    return Target(resolved)


# libpq's "connection to server on socket "/x/.s.PGSQL.5432" failed: FATAL:  " prefix; every
# message of ours already says which server.
_LIBPQ_PREFIX = re.compile(
    r'^(connection (failed|is bad): )?(connection to server (on socket|at) "[^"]*"( \([^)]*\))?'
    r"(, port \d+)? failed: )?((FATAL|ERROR): +)?"
)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return _LIBPQ_PREFIX.sub("", text.splitlines()[0].strip())


def describe(e: BaseException) -> str:
    """One line for a database error, without the driver's multi-line decoration."""
    import psycopg

    if isinstance(e, psycopg.Error):
        diag = getattr(e, "diag", None)
        primary = diag.message_primary if diag is not None else None
        return primary or _first_line(e)
    return _first_line(e)


def connect(target: Target, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """Connect, or raise ConnectError with one line saying what failed and what to try."""
    import psycopg

    try:
        return psycopg.connect(
            target.conninfo(),
            autocommit=autocommit,
            connect_timeout=10,
            application_name="dbinit",
        )
    except psycopg.OperationalError as e:
        reason = describe(e)
        hint = ""
        if "No such file or directory" in reason or "Connection refused" in reason:
            hint = "; is PostgreSQL running? (`dbinit status`)"
        elif "does not exist" in reason and "database" in reason:
            hint = "; check the database name"
        elif "permission denied for database" in reason:
            hint = (
                "; setup and check connect as a superuser (on the box: run them as the "
                "postgres system user, or pass --dsn 'user=postgres')"
            )
        error = NoSuchTarget if "does not exist" in reason else ConnectError
        raise error(f"cannot connect to PostgreSQL at {target.where}: {reason}{hint}") from e


def require_superuser(conn: psycopg.Connection[Any], command: str) -> str:
    """The connected role's name; ToolError unless it is a superuser."""
    row = conn.execute(
        "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    user, is_super = str(row[0]), bool(row[1])
    if not is_super:
        raise ToolError(
            f"`dbinit {command}` must run as a PostgreSQL superuser, but {user!r} is not one: "
            "run it as the postgres system user, or pass --dsn 'user=postgres'"
        )
    return user
