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

Each phase is planned by its module in `dbinit.plan`; this one runs them in order, each
in one transaction, under an advisory lock that serialises concurrent runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from psycopg import sql

from dbinit.connect import Target, connect, describe, require_superuser
from dbinit.names import Names
from dbinit.plan.change import NOT_EXTENSION_MEMBER, USER_SCHEMAS, Change, Outcome, done
from dbinit.plan.databases import plan_database_privileges, plan_databases
from dbinit.plan.functions import plan_definer_functions
from dbinit.plan.odoo_db import OdooDbState, plan_odoo_database
from dbinit.plan.pgadmin_db import plan_pgadmin_database
from dbinit.plan.roles import plan_roles
from odbox_common.errors import LockHeldError, ToolError, UsageError

if TYPE_CHECKING:
    import psycopg

LOCK_KEY = 0x6462696E6974  # "dbinit"
LOCK_WAIT_SECONDS = 60


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
