"""The `odbox-deploy` command line: parses arguments and prints; the work is in the other modules.

Only typer and the standard library at the top, so `--help` is fast; psycopg loads in the
commands that use it.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from odbox_common import console, runner
from odbox_common.errors import ExitCode, UsageError
from odbox_deploy import __version__

if TYPE_CHECKING:
    from odbox_deploy.commands import Odoo
    from odbox_deploy.plan import Code, Plan

app = runner.typer_app(
    "odbox-deploy",
    (
        "Odoo module updates behind a snapshot: update exactly the modules whose files changed, "
        "and roll back by itself (data and code) when the update fails.\n\n"
        "Exit codes: 0 ok (or nothing to do), 1 failed (rolled back), 2 usage, 3 the plan found "
        "problems, 4 another run holds the lock, 130 interrupted."
    ),
)

CODE = "Where the code is"
SERVICE = "How the box runs Odoo"
DATA = "The data"

Db = Annotated[str, typer.Option("--db", envvar="ODBOX_DB", help="Odoo's database.",
                                 rich_help_panel=DATA)]  # fmt: skip
Dsn = Annotated[
    str,
    typer.Option(
        "--dsn",
        envvar="ODBOX_DSN",
        rich_help_panel=DATA,
        help="libpq connection string of a role that may write the database (default: PG*).",
    ),
]
Conf = Annotated[
    Path,
    typer.Option(
        "--odoo-conf",
        envvar="ODBOX_ODOO_CONF",
        metavar="FILE",
        rich_help_panel=CODE,
        help="The box's odoo.conf (its addons_path and data_dir; Odoo's update reads it).",
    ),
]
OdooRoot = Annotated[
    Path,
    typer.Option(
        "--odoo-root",
        envvar="ODBOX_ODOO_ROOT",
        metavar="DIR",
        rich_help_panel=CODE,
        help="Odoo's package folder (release.py, addons/), e.g. …/site-packages/odoo.",
    ),
]
OdooBin = Annotated[
    str,
    typer.Option(
        "--odoo",
        envvar="ODBOX_ODOO_BIN",
        metavar="COMMAND",
        rich_help_panel=SERVICE,
        help="The odoo executable (with arguments, shell-quoted).",
    ),
]
OdooUser = Annotated[
    str | None,
    typer.Option(
        "--odoo-user",
        envvar="ODBOX_ODOO_USER",
        metavar="USER",
        rich_help_panel=SERVICE,
        help="Run Odoo as this OS user (the box's odoo; default: this process's user).",
    ),
]
StateDirOption = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="ODBOX_DEPLOY_STATE",
        metavar="DIR",
        help="The journal, last.json and the update logs (0700).",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document instead.")]
Debug = Annotated[bool, typer.Option("--debug", envvar="ODBOX_DEPLOY_DEBUG",
                                     help="Show a traceback on errors.")]  # fmt: skip

DEFAULT_STATE = Path("/var/lib/odbox-deploy")


def _code(odoo_root: Path, conf: Path, state_dir: Path | None = None) -> Code:
    from odbox_deploy.plan import Code

    return Code(odoo_root, conf, state_dir / "checksum-cache.json" if state_dir else None)


def _odoo(odoo: str, conf: Path, db: str, user: str | None) -> Odoo:
    from odbox_deploy.commands import Odoo

    return Odoo(tuple(shlex.split(odoo)), conf, db, user)


def _say(json: bool) -> Callable[[str], None]:
    return (lambda text: console.say(text, sys.stderr)) if json else console.say


@app.callback()
def main_options(
    debug: Debug = False,
    version: Annotated[bool, runner.version_option("odbox-deploy", __version__)] = False,
) -> None:
    """Options for every command."""


def _print_plan(plan: Plan) -> None:
    if plan.nothing:
        console.say("nothing to deploy: every installed module is as recorded")
        return
    if plan.first:
        console.say(f"first deploy: will record the checksums of {len(plan.checksums.modules)} "
                    "installed modules and update nothing")  # fmt: skip
    rows = [[name, "update", plan.reasons.get(name, "")] for name in plan.update]
    rows += [[name, "install", plan.reasons.get(name, "")] for name in plan.install]
    rows += [[name, "missing", "installed, but in no folder of the addons path"]
             for name in plan.missing]  # fmt: skip
    if rows:
        console.table("deploy plan", ["module", "action", "why"], rows)
    if plan.work:
        console.say(f"odoo {shlex.join(plan.odoo_arguments())} (Odoo also updates every "
                    "installed module that depends on these)")  # fmt: skip
    elif not plan.first and not plan.missing:
        console.say("nothing to update: the checksums of newly installed modules are recorded")


@app.command()
def plan(
    db: Db, odoo_conf: Conf, odoo_root: OdooRoot, dsn: Dsn = "",
    state_dir: StateDirOption = DEFAULT_STATE, json: Json = False, debug: Debug = False,
) -> None:  # fmt: skip
    """Say which installed modules an update must touch, and why (changes nothing).

    Exit 3 when an installed module is missing from the addons path or Odoo's series changed.
    """
    from psycopg.conninfo import make_conninfo

    from odbox_deploy.apply import PlanRefused, refuse
    from odbox_deploy.plan import make_plan

    found = make_plan(_code(odoo_root, odoo_conf, state_dir), make_conninfo(dsn, dbname=db))
    if json:
        console.print_json(found.as_json())
    else:
        _print_plan(found)
    try:
        refuse(found)
    except PlanRefused as e:
        console.error(str(e))
        raise typer.Exit(int(ExitCode.PROBLEMS)) from None


@app.command()
def apply(
    db: Db,
    odoo_conf: Conf,
    odoo_root: OdooRoot,
    filestore: Annotated[Path, typer.Option(
        "--filestore", envvar="ODBOX_FILESTORE", rich_help_panel=DATA,
        help="Odoo's filestore folder for the database (the snapshot takes and restores it).")],
    stop_command: Annotated[str, typer.Option(
        "--stop-command", envvar="ODBOX_ODOO_STOP", metavar="COMMAND", rich_help_panel=SERVICE,
        help="Stops Odoo (NixOS: systemctl stop odoo).")],
    start_command: Annotated[str, typer.Option(
        "--start-command", envvar="ODBOX_ODOO_START", metavar="COMMAND", rich_help_panel=SERVICE,
        help="Starts Odoo (NixOS: systemctl start odoo).")],
    rollback_command: Annotated[str | None, typer.Option(
        "--rollback-command", envvar="ODBOX_DEPLOY_ROLLBACK", metavar="COMMAND",
        rich_help_panel=SERVICE,
        help="Brings the previous code back after a failed update (NixOS: the previous "
        "generation); run before Odoo is started again.")] = None,
    health_url: Annotated[str | None, typer.Option(
        "--health-url", envvar="ODBOX_DEPLOY_HEALTH_URL", metavar="URL", rich_help_panel=SERVICE,
        help="Must answer 200 with status pass after the start, e.g. "
        "http://127.0.0.1:8069/odbox/health (default: no check).")] = None,
    health_timeout: Annotated[float, typer.Option(
        "--health-timeout", envvar="ODBOX_DEPLOY_HEALTH_TIMEOUT", min=1, metavar="SECONDS",
        rich_help_panel=SERVICE,
        help="How long the health check may take.")] = 300,
    odoo: OdooBin = "odoo",
    odoo_user: OdooUser = None,
    backup: Annotated[str, typer.Option(
        "--backup", envvar="ODBOX_DEPLOY_BACKUP", metavar="COMMAND", rich_help_panel=DATA,
        help="odbox-backup, with its repository in the environment (ODBOX_BACKUP_REPO, …).")
    ] = "odbox-backup",
    dsn: Dsn = "",
    state_dir: StateDirOption = DEFAULT_STATE,
    hook: Annotated[str | None, typer.Option(
        "--hook", envvar="ODBOX_DEPLOY_HOOK", metavar="COMMAND",
        help="Run with the phase as its last argument after each journal step.")] = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Update the changed modules behind a pre-deploy snapshot; roll back on any failure.

    Nothing changed: exit 0 at once, no snapshot. A run killed at any step is finished or
    rolled back by the next `apply`; `status` says which.
    """
    from odbox_deploy.apply import Box
    from odbox_deploy.apply import apply as do_apply
    from odbox_deploy.commands import Backup
    from odbox_deploy.journal import StateDir

    commands = {}
    for name, value in (("--stop-command", stop_command), ("--start-command", start_command)):
        commands[name] = shlex.split(value)
        if not commands[name]:
            raise UsageError(f"{name} is empty")
    box = Box(
        db=db, dsn=dsn, filestore=filestore, code=_code(odoo_root, odoo_conf, state_dir),
        odoo=_odoo(odoo, odoo_conf, db, odoo_user),
        backup=Backup(tuple(shlex.split(backup)), db, filestore),
        stop=commands["--stop-command"], start=commands["--start-command"],
        rollback=shlex.split(rollback_command) if rollback_command else None,
        health_url=health_url, health_timeout=health_timeout, state=StateDir(state_dir),
        hook=shlex.split(hook) if hook else None,
    )  # fmt: skip
    result = do_apply(box, _say(json))
    if json:
        console.print_json(result.as_json())
    else:
        console.say(result.message)


@app.command()
def record(db: Db, odoo_conf: Conf, odoo_root: OdooRoot, dsn: Dsn = "", json: Json = False,
           debug: Debug = False) -> None:  # fmt: skip
    """Record the checksums of the code on disk when none are recorded yet (a new box right
    after odoo-initialize installed its modules); otherwise do nothing. Safe at every start."""
    from psycopg.conninfo import make_conninfo

    from odbox_deploy.apply import record_first

    result = record_first(_code(odoo_root, odoo_conf), make_conninfo(dsn, dbname=db))
    _say(json)(result.message)
    if json:
        console.print_json(result.as_json())


@app.command()
def status(state_dir: StateDirOption = DEFAULT_STATE, json: Json = False,
           debug: Debug = False) -> None:  # fmt: skip
    """Say what the last deploy left: updated, rolled-back, or in progress (re-run apply)."""
    from odbox_deploy.apply import status as read_status
    from odbox_deploy.journal import StateDir

    found = read_status(StateDir(state_dir))
    if json:  # schema 1: a key added keeps it, one renamed or removed makes it 2
        console.print_json({"schema": 1, "phase": None, "id": None, **found})
    else:
        console.say(f"{found['state']}: {found['message']}")


@app.command()
def neutralize(
    db: Db, odoo_conf: Conf, odoo: OdooBin = "odoo", odoo_user: OdooUser = None,
    state_dir: StateDirOption = DEFAULT_STATE, json: Json = False, debug: Debug = False,
) -> None:  # fmt: skip
    """Run Odoo's own neutralization on a database (a staging copy): mail servers and crons
    off, payment providers in test mode. Never on production: it cannot be undone."""
    from odbox_deploy.journal import StateDir
    from odbox_deploy.neutralize import neutralize as do_neutralize

    log = do_neutralize(_odoo(odoo, odoo_conf, db, odoo_user), StateDir(state_dir).logs)
    _say(json)(f"neutralized database {db} (log: {log})")
    if json:
        console.print_json({"schema": 1, "database": db, "neutralized": True, "log": str(log)})


def run_cli(argv: list[str]) -> int:
    if not argv:
        runner.run(app, ["--help"], prog="odbox-deploy", debug_env="ODBOX_DEPLOY_DEBUG")
        return int(ExitCode.USAGE)
    from odbox_common.signals import interrupts_as_exceptions

    # SIGTERM (systemctl stop, TimeoutStartSec) as Ctrl-C: a deploy past its snapshot rolls
    # back (uninterruptibly) rather than leave a half-updated database.
    with interrupts_as_exceptions():
        return runner.run(
            app, argv, prog="odbox-deploy", debug_env="ODBOX_DEPLOY_DEBUG",
            interrupted="interrupted; `odbox-deploy status` says what was left",
        )  # fmt: skip


def main() -> NoReturn:
    sys.exit(run_cli(sys.argv[1:]))
