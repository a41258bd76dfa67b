"""The `dbinit` command line: parses arguments and prints; the work is in the other modules.

Only typer and the standard library are imported at the top, so `--help` is
fast; psycopg is imported by the commands that talk to the server.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from dbinit import __version__
from odbox_common import console, runner
from odbox_common.console import count_of
from odbox_common.errors import ExitCode

app = runner.typer_app(
    "dbinit",
    (
        "PostgreSQL roles, databases and least-privilege grants for Odoo and pgAdmin, "
        "kept so on every boot and proven by `check`.\n\n"
        "Connects as the PostgreSQL superuser over the local Unix socket unless --dsn or the "
        "PG* variables say otherwise. Exit codes: 0 ok, 1 failed, 2 usage, 3 check found "
        "drift, 4 another setup holds the lock."
    ),
)

Dsn = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        envvar="ODBOX_DSN",
        metavar="DSN",
        help="libpq connection string or URI (default: the local socket, database postgres).",
    ),
]
Debug = Annotated[
    bool, typer.Option("--debug", envvar="ODBOX_DBINIT_DEBUG", help="Show a traceback on errors.")
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document instead.")]
AdminRole = Annotated[
    str, typer.Option("--admin-role", envvar="ODBOX_ADMIN_ROLE", help="The superuser for humans.")
]
OdooRole = Annotated[
    str, typer.Option("--odoo-role", envvar="ODBOX_ODOO_ROLE", help="The role Odoo logs in as.")
]
OdooDb = Annotated[str, typer.Option("--odoo-db", envvar="ODBOX_DB", help="Odoo's database.")]
PgadminRole = Annotated[
    str,
    typer.Option(
        "--pgadmin-role", envvar="ODBOX_PGADMIN_ROLE", help="The role pgAdmin logs in as."
    ),
]
PgadminDb = Annotated[
    str,
    typer.Option("--pgadmin-db", envvar="ODBOX_PGADMIN_DB", help="pgAdmin's own database."),
]
HandymanRole = Annotated[
    str | None,
    typer.Option(
        "--handyman-role",
        envvar="ODBOX_HANDYMAN_ROLE",
        help="NOLOGIN role holding read/write on Odoo's tables, granted to pgAdmin "
        "(default: ODOO_ROLE_handyman).",
    ),
]
NoPgadmin = Annotated[
    bool,
    typer.Option(
        "--no-pgadmin", envvar="ODBOX_NO_PGADMIN", help="No pgAdmin role, database or grants."
    ),
]
Extensions = Annotated[
    list[str] | None,
    typer.Option(
        "--extension",
        metavar="NAME",
        help="An extension to create in Odoo's database (repeat; default: pg_trgm, unaccent).",
    ),
]


def _names(
    admin: str,
    odoo: str,
    odoo_db: str,
    pgadmin: str,
    pgadmin_db: str,
    handyman: str | None,
    no_pgadmin: bool,
    extensions: list[str] | None,
) -> object:
    from dbinit.names import DEFAULT_EXTENSIONS, Names

    return Names.make(
        admin=admin,
        odoo=odoo,
        odoo_db=odoo_db,
        pgadmin=pgadmin,
        pgadmin_db=pgadmin_db,
        handyman=handyman,
        with_pgadmin=not no_pgadmin,
        extensions=tuple(extensions) if extensions else DEFAULT_EXTENSIONS,
    )


# The version of every --json document's layout: a key is added without changing it; one
# renamed, removed or changed in meaning makes it 2.
JSON_SCHEMA = 1


@app.callback()
def main_options(
    debug: Debug = False,
    version: Annotated[
        bool,
        runner.version_option("dbinit", __version__),
    ] = False,
) -> None:
    """Options that apply to every command."""


@app.command(
    epilog=runner.examples(
        ("what setup would change, changing nothing", "dbinit setup --dry-run"),
        ("on the box, as the postgres system user", "sudo -u postgres dbinit setup"),
        (
            "another server, without pgAdmin's role and database",
            "dbinit setup --dsn 'host=db.example.com user=postgres' --no-pgadmin",
        ),
        ("what a monitoring script reads", "dbinit setup --dry-run --json"),
    ),
)
def setup(
    dsn: Dsn = None,
    admin_role: AdminRole = "admin",
    odoo_role: OdooRole = "odoo",
    odoo_db: OdooDb = "odoo",
    pgadmin_role: PgadminRole = "pgadmin",
    pgadmin_db: PgadminDb = "pgadmin",
    handyman_role: HandymanRole = None,
    no_pgadmin: NoPgadmin = False,
    extension: Extensions = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change; change nothing.")
    ] = False,
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            min=0.001,
            metavar="SECONDS",
            help="How long to wait for another setup on the same server before exit 4.",
        ),
    ] = 60,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Create or correct roles, databases and grants; with nothing to change, only reads."""
    from dbinit.connect import resolve
    from dbinit.names import Names
    from dbinit.provision import Setup

    names = _names(admin_role, odoo_role, odoo_db, pgadmin_role, pgadmin_db, handyman_role,
                   no_pgadmin, extension)  # fmt: skip
    assert isinstance(names, Names)
    target = resolve(dsn)
    warnings: list[str] = []

    def warn(line: str) -> None:
        warnings.append(line)
        console.warn(line)

    outcome = Setup(
        target,
        names,
        dry_run=dry_run,
        lock_wait=lock_timeout,
        report=(lambda line: console.say(line, sys.stderr)) if json else console.say,
        warn=warn,
    ).run()
    changes = len(outcome.changes)
    if json:  # the lines above went to stderr: stdout is the one document
        console.print_json({"schema": JSON_SCHEMA, "server": target.where, "dry_run": dry_run,
                            "changed": bool(changes) and not dry_run, "changes": outcome.changes,
                            "warnings": warnings})  # fmt: skip
    elif not changes:
        console.say(f"{target.where}: roles, databases and grants are as they should be")
    elif dry_run:
        console.say(f"{target.where}: {count_of(changes, 'change')} to make; nothing was changed")
    else:
        console.say(f"{target.where}: made {count_of(changes, 'change')}")


@app.command(
    epilog=runner.examples(
        ("the privilege matrix; exit 3 on drift", "sudo -u postgres dbinit check"),
        ("the same as JSON, for monitoring", "dbinit check --json"),
    ),
)
def check(
    dsn: Dsn = None,
    admin_role: AdminRole = "admin",
    odoo_role: OdooRole = "odoo",
    odoo_db: OdooDb = "odoo",
    pgadmin_role: PgadminRole = "pgadmin",
    pgadmin_db: PgadminDb = "pgadmin",
    handyman_role: HandymanRole = None,
    no_pgadmin: NoPgadmin = False,
    extension: Extensions = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Print the privilege matrix; exit 3 and name each drift from what setup makes."""
    from dbinit.audit import check as audit
    from dbinit.connect import resolve
    from dbinit.names import Names

    names = _names(admin_role, odoo_role, odoo_db, pgadmin_role, pgadmin_db, handyman_role,
                   no_pgadmin, extension)  # fmt: skip
    assert isinstance(names, Names)
    report = audit(resolve(dsn), names)
    if json:
        console.print_json(report.to_json())
    else:
        rows = [
            [capability, *(cells[c].text + ("" if cells[c].ok else " !") for c in report.columns)]
            for capability, cells in report.rows
        ]
        console.table(f"privileges on {report.where}", ["", *report.columns], rows)
        for note in report.notes:
            console.say(f"note: {note}")
        for drift in report.drift:
            console.say(f"drift: {drift}")
        drifts, by_hand = len(report.drift), len(report.by_hand)
        if report.ok:
            console.say(f"{report.where}: no drift")
        elif not by_hand:
            console.say(f"{report.where}: {count_of(drifts, 'drift')}; `dbinit setup` fixes them")
        else:
            console.say(
                f"{report.where}: {count_of(drifts, 'drift')}; `dbinit setup` fixes "
                f"{drifts - by_hand}, {by_hand} need a human (the lines that say 'by hand')"
            )
    if not report.ok:
        raise typer.Exit(ExitCode.PROBLEMS)


@app.command(
    epilog=runner.examples(
        ("down, running or ready (exit 0 only when ready)", "dbinit status"),
        ("the same as JSON", "dbinit status --dsn 'host=/run/postgresql' --json"),
    ),
)
def status(dsn: Dsn = None, json: Json = False, debug: Debug = False) -> None:
    """Say whether the server is down, running (not yet accepting connections) or ready.

    Exit 0 when ready, 1 otherwise.
    """
    from dbinit.connect import resolve
    from dbinit.server import READY
    from dbinit.server import status as ask

    result = ask(resolve(dsn))
    if json:
        console.print_json(result.to_json())
    else:
        detail = f" ({result.detail})" if result.detail else ""
        console.say(f"{result.where}: {result.state}{detail}")
    if result.state != READY:
        raise typer.Exit(ExitCode.FAILED)


@app.command(
    epilog=runner.examples(
        ("before a service that needs PostgreSQL", "dbinit wait --timeout 120"),
    ),
)
def wait(
    dsn: Dsn = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0, metavar="SECONDS", help="Give up after this long."),
    ] = 60,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Return as soon as the server accepts connections; exit 1 after --timeout."""
    from dbinit.connect import resolve
    from dbinit.server import READY
    from dbinit.server import wait as wait_for

    target = resolve(dsn)
    waited = wait_for(target, timeout)
    if json:  # `server` and `state` as in `status --json`
        console.print_json({"schema": JSON_SCHEMA, "server": target.where, "state": READY,
                            "waited_seconds": round(waited, 3)})  # fmt: skip
    else:
        console.say(f"{target.where}: ready after {waited:.1f} s")


@app.command(
    "pgadmin-boot",
    epilog=runner.examples(
        (
            "as the NixOS module runs it before pgAdmin starts",
            "dbinit pgadmin-boot --email admin@example.com "
            "--password-file /run/secrets/pgadmin.txt "
            "--db-uri 'postgresql://pgadmin@/pgadmin?host=/run/postgresql'",
        ),
        (
            "the same, with the result as JSON (its lines on stderr)",
            "dbinit pgadmin-boot --email admin@example.com "
            "--password-file /run/secrets/pgadmin.txt "
            "--db-uri 'postgresql://pgadmin@/pgadmin?host=/run/postgresql' --json",
        ),
    ),
)
def pgadmin_boot(
    email: Annotated[
        str,
        typer.Option("--email", envvar="ODBOX_PGADMIN_EMAIL", help="pgAdmin's first account."),
    ],
    password_file: Annotated[
        Path,
        typer.Option(
            "--password-file",
            envvar="ODBOX_PGADMIN_PASSWORD_FILE",
            metavar="FILE",
            help="The account's password (e.g. the vault's pgadmin-admin.txt), one line.",
        ),
    ],
    db_uri: Annotated[
        str,
        typer.Option(
            "--db-uri",
            envvar="ODBOX_PGADMIN_DB_URI",
            metavar="URI",
            help="pgAdmin's CONFIG_DATABASE_URI, e.g. "
            "postgresql://pgadmin@/pgadmin?host=/run/postgresql",
        ),
    ],
    data_dir: Annotated[
        Path,
        typer.Option("--data-dir", envvar="ODBOX_PGADMIN_DATA_DIR", help="pgAdmin's DATA_DIR."),
    ] = Path("/var/lib/pgadmin"),
    maintenance_db: Annotated[
        str,
        typer.Option(
            "--maintenance-db",
            envvar="ODBOX_DB",
            help="The database the `local` server opens (Odoo's).",
        ),
    ] = "odoo",
    server_user: Annotated[
        str | None,
        typer.Option(
            "--server-user",
            help="The role the `local` server logs in as (default: the --db-uri user).",
        ),
    ] = None,
    pgadmin_cli: Annotated[
        str,
        typer.Option("--pgadmin-cli", envvar="ODBOX_PGADMIN_CLI", help="pgAdmin's CLI program."),
    ] = "pgadmin4-cli",
    min_password_length: Annotated[
        int, typer.Option("--min-password-length", min=1, help="pgAdmin's PASSWORD_LENGTH_MIN.")
    ] = 6,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Set up pgAdmin's database and first account, and the `local` server over the socket."""
    from dbinit.pgadmin import PgAdminBoot

    boot = PgAdminBoot(
        email=email,
        password_file=password_file,
        db_uri=db_uri,
        data_dir=data_dir,
        pgadmin_cli=pgadmin_cli,
        server_user=server_user,
        maintenance_db=maintenance_db,
        min_password_length=min_password_length,
        report=(lambda line: console.say(line, sys.stderr)) if json else console.say,
    )
    result = boot.run()
    if json:  # the lines above went to stderr: stdout is the one document
        console.print_json({"schema": JSON_SCHEMA, "server": boot.target.where,
                            "database": boot.target.dbname, "email": email,
                            "pgadmin_server": {"name": boot.server_name,
                                               **result.server.to_json()},
                            "changed": bool(result.changed),
                            "changes": result.changed})  # fmt: skip
    elif not result.changed:
        s = result.server
        console.say(
            f"pgAdmin server 'local' already points at {s.host} port {s.port} "
            f"(database {s.maintenance_db}, role {s.username})"
        )


def _describe(e: BaseException) -> str:
    from dbinit.connect import describe

    return f"database error: {describe(e)}"


def _known_errors() -> tuple[type[BaseException], ...]:
    if "psycopg" in sys.modules:
        import psycopg

        return (psycopg.Error,)
    return ()


def run(argv: list[str]) -> int:
    """Run the command line; every failure becomes one line on stderr and an exit code."""
    if not argv:  # the help, not an error message wrapped around it
        runner.run(app, ["--help"], prog="dbinit", debug_env="ODBOX_DBINIT_DEBUG")
        return int(ExitCode.USAGE)
    return runner.run(
        app,
        argv,
        prog="dbinit",
        debug_env="ODBOX_DBINIT_DEBUG",
        global_options=("--dsn",),
        interrupted="interrupted; each step is a transaction, so it was made in full or not at all",
        known_errors=_known_errors,
        describe=_describe,
    )


def main() -> NoReturn:
    sys.exit(run(sys.argv[1:]))
