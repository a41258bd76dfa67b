"""The `odbox-backup` command line: parses arguments and prints; the work is in the other modules.

Only typer and the standard library are imported at the top, so `--help` is
fast; boto3, psycopg, zstandard and pyrage load in the commands that use them.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from odbox_backup import __version__, cli_maintenance, cli_restore, cli_snapshots
from odbox_backup.cli_options import (
    AuthKeyFile,
    Debug,
    Dsn,
    Identity,
    Json,
    MetricsFile,
    OdooServiceName,
    OdooStart,
    OdooStop,
    PgBin,
    Repo,
    Tags,
    Wait,
    _locked,
    _log,
    _open,
    app,
)
from odbox_common import console, runner
from odbox_common.console import count_of
from odbox_common.console import human_size as _size
from odbox_common.errors import ExitCode, ToolError, UsageError


@app.callback()
def main_options(
    debug: Debug = False,
    version: Annotated[bool, runner.version_option("odbox-backup", __version__)] = False,
) -> None:
    """Options for every command."""


@app.command()
def init(
    repo: Repo,
    recipient: Annotated[
        list[str] | None,
        typer.Option(
            "--recipient",
            metavar="RECIPIENT",
            help="Encrypt to this age1… or ssh-ed25519/ssh-rsa public key (repeat).",
        ),
    ] = None,
    recipients_file: Annotated[
        Path | None,
        typer.Option("--recipients-file", "-R", metavar="FILE", help="Recipients, one a line."),
    ] = None,
    auth_key: Annotated[
        Path | None,
        typer.Option(
            "--auth-key-file", envvar="ODBOX_BACKUP_AUTH_KEY_FILE", metavar="FILE",
            help="The authentication key: written there (0600) when the file does not exist, "
            "else the one it holds (one key for several repositories). Required.",
        ),
    ] = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Make a new, empty repository (encrypted when given recipients)."""
    from odbox_backup.report import SCHEMA
    from odbox_backup.repository import AuthKey, Repository
    from odbox_backup.store import open_store
    from odbox_common.age import is_a_key, recipient_lines
    from odbox_common.files import write_private

    if is_a_key(repo):  # age's -r RECIPIENT typed out of habit: -r is the repository here
        raise UsageError("the repository given is a key: -r is --repo (as restic's -r); give "
                         "recipients with --recipient (or -R FILE); nothing was made")  # fmt: skip
    if auth_key is None:
        raise UsageError(
            "give --auth-key-file FILE (or set ODBOX_BACKUP_AUTH_KEY_FILE): a new key is "
            "written there unless it exists; the box and the admin keep it, the repository never"
        )

    recipients = list(recipient or [])
    if recipients_file is not None:
        try:
            in_file = recipient_lines(recipients_file.read_text().splitlines())
        except OSError as e:
            raise UsageError(f"cannot read {recipients_file}: {e.strerror}") from e
        if not in_file:
            raise UsageError(
                f"{recipients_file} holds no recipient (only blank lines or # comments): "
                "add an age1… or ssh-ed25519/ssh-rsa public key, or leave out -R for a "
                "repository that is not encrypted; nothing was created"
            )
        recipients += in_file
    new_key = not auth_key.exists()
    key = AuthKey.generate(str(auth_key)) if new_key else AuthKey.load(auth_key)
    store = open_store(repo)
    Repository.check_new(store, recipients)  # before a key is written for nothing
    if new_key:
        try:
            auth_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # /var/lib/odbox
            write_private(auth_key, key.text().encode())
        except OSError as e:
            raise UsageError(f"cannot write the key {auth_key}: {e.strerror}") from e
    created = Repository.init(store, recipients, key)
    if json:
        console.print_json({"schema": SCHEMA, "repository": store.url, "id": created.config.id,
                            "encrypted": created.config.encrypted,
                            "recipients": len(created.config.recipients),
                            "auth_key_file": str(auth_key),
                            "auth_key_written": new_key})  # fmt: skip
    say = _log(json)
    if new_key:
        say(f"wrote a new authentication key to {auth_key}: keep a copy with the "
                    "identity (the vault); every command on this repository needs it")  # fmt: skip
    kind = (
        f"encrypted to {count_of(len(created.config.recipients), 'recipient')}"
        if created.config.encrypted
        else "not encrypted"
    )
    say(f"created repository {repo} ({kind})")


@app.command()
def run(
    repo: Repo,
    db: Annotated[str, typer.Option("--db", envvar="ODBOX_DB", help="Odoo's database.")],
    filestore: Annotated[
        Path,
        typer.Option(
            "--filestore",
            envvar="ODBOX_FILESTORE",
            help="Odoo's filestore folder for that database (e.g. /var/lib/odoo/filestore/odoo).",
        ),
    ],
    dsn: Dsn = None,
    pg_bin: PgBin = None,
    cold: Annotated[
        bool,
        typer.Option(
            "--cold/--hot",
            help="Stop Odoo for the backup (and start it again, "
            "even when the backup fails); hot by default.",
        ),
    ] = False,
    odoo_service: OdooServiceName = None,
    odoo_stop: OdooStop = None,
    odoo_start: OdooStart = None,
    wait: Wait = 0,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", envvar="ODBOX_BACKUP_CACHE", metavar="DIR",
                     help="Where to keep what this run stored, so the next one skips unchanged "
                     "files and an unchanged database (default: $CACHE_DIRECTORY, "
                     "else ~/.cache/odbox-backup)."),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither use nor keep the cache.")
    ] = False,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing",
                           help="Exit 0 even when the database names attachments the filestore "
                           "lacks (the snapshot is written either way, and says how many).")
    ] = False,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    metrics_file: MetricsFile = None,
    tag: Tags = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Back up the database, then the filestore, into a new snapshot."""
    from odbox_backup import metrics

    metrics.begin("run", repo, metrics_file, cache_dir)
    from psycopg.conninfo import make_conninfo

    from odbox_backup import cache
    from odbox_backup.backup import Source, run_backup
    from odbox_backup.report import progress_for, snapshot_made
    from odbox_backup.service import OdooService
    from odbox_backup.tags import check_tags

    service = OdooService.from_options(odoo_service, odoo_stop, odoo_start)
    tags = check_tags(tag or [])
    if cold and not service.managed:
        raise UsageError("--cold needs --odoo-service, or --odoo-stop and --odoo-start")
    repository = _open(repo, identity, auth_key)
    repository.require_writable()
    conninfo = make_conninfo(dsn or "", dbname=db)
    with _locked(repository, "run", wait):
        folder = None if no_cache else (cache_dir or cache.default_dir())
        previous = cache.load(folder, repository) if folder else None
        if previous is None and (not repository.config.encrypted or repository.identities):
            latest = repository.newest(db)
            previous = repository.read_snapshot(latest) if latest else None
        source = Source(conninfo, db, filestore, pg_bin, "cold" if cold else "hot")
        with (
            service.stopped(_log(json)) if cold else contextlib.nullcontext(),
            progress_for(json) as progress,
        ):
            manifest = run_backup(repository, source, previous=previous, progress=progress,
                                  tags=tags)  # fmt: skip
        if folder and (reason := cache.save(folder, repository, manifest)):
            console.warn(reason)
    t = manifest["totals"]
    metrics.note(last_bytes_added=t["new_bytes"], snapshots=len(repository.snapshot_ids()),
                 snapshot=manifest["id"], database=db)  # fmt: skip
    missing = manifest["filestore"].get("missing", 0)
    if json:
        console.print_json(snapshot_made(repository, manifest, previous))
    _log(json)(
        f"snapshot {manifest['id']}: {count_of(manifest['filestore']['count'], 'file')}, "
        f"{_size(t['bytes'])} in {count_of(t['objects'], 'object')}, {_size(t['new_bytes'])} new "
        f"in {count_of(t['new_objects'], 'object')}, {t['seconds']:.1f} s"
        + (f", {count_of(missing, 'attachment')} missing from the filestore" if missing else "")
    )
    if missing:
        what = (f"the database names {count_of(missing, 'attachment')} the filestore lacks (first: "
                f"{manifest['filestore']['missing_first']}): Odoo shows them empty, and the "
                "snapshot holds them as they are")  # fmt: skip
        if not allow_missing:
            raise ToolError(f"{what}; pass --allow-missing once that is known and accepted")
        console.warn(what)


# The commands of the other cli_* modules, registered here in the order `--help` lists them.
for _command, _name in (
    (cli_snapshots.list_, "list"),
    (cli_snapshots.show, None),
    (cli_restore.restore, None),
    (cli_maintenance.verify, None),
    (cli_maintenance.prune, None),
    (cli_maintenance.copy, None),
    (cli_restore.export, "export"),
    (cli_restore.import_, "import"),
    (cli_restore.drop_previous, "drop-previous"),
    (cli_snapshots.ls, "ls"),
    (cli_snapshots.dump, "dump"),
    (cli_snapshots.stats, "stats"),
    (cli_snapshots.diff, "diff"),
):
    app.command(_name)(_command)
app.add_typer(cli_snapshots.tag_app, name="tag")

# Registered on `app` when imported: status, notify, unlock, repair, and recipients.
from odbox_backup import cli_ops, cli_recipients  # noqa: E402,F401


def run_cli(argv: list[str]) -> int:
    if not argv:
        runner.run(app, ["--help"], prog="odbox-backup", debug_env="ODBOX_BACKUP_DEBUG")
        return int(ExitCode.USAGE)
    # SIGTERM (systemctl stop, shutdown, TimeoutStartSec) and SIGHUP as Ctrl-C: a cold run
    # starts Odoo again, locks are released, a restore before its swap removes what it made
    # (the swap itself ignores them and finishes).
    from odbox_backup import metrics
    from odbox_common.signals import interrupts_as_exceptions

    with interrupts_as_exceptions(), metrics.errors_seen() as seen:
        try:
            code = runner.run(
                app, argv, prog="odbox-backup", debug_env="ODBOX_BACKUP_DEBUG",
                global_options=("--repo", "--identity", "--auth-key-file"),
                interrupted="interrupted; earlier snapshots and the live database and "
                "filestore are intact",
            )  # fmt: skip
        except BaseException as e:  # --debug lets the error out: it is recorded all the same
            metrics.finish(int(ExitCode.FAILED), f"{type(e).__name__}: {e}")
            raise
    for warning in metrics.finish(code, seen[-1] if seen else None):
        console.warn(warning)
    return code


def main() -> NoReturn:
    sys.exit(run_cli(sys.argv[1:]))
