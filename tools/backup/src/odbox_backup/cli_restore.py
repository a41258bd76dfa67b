"""The commands that take data out of a repository or bring it in (restore, export, import,
drop-previous): their Typer layer. cli.py registers them on its app."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from odbox_backup.cli_options import (
    AuthKeyFile,
    Debug,
    Dsn,
    Identity,
    Json,
    OdooServiceName,
    OdooStart,
    OdooStop,
    PgBin,
    Repo,
    Wait,
    _locked,
    _log,
    _open,
    _reading,
)
from odbox_common import console
from odbox_common.console import count_of
from odbox_common.console import human_size as _size
from odbox_common.errors import ToolError, UsageError

if TYPE_CHECKING:
    pass


Neutralize = Annotated[
    bool,
    typer.Option("--neutralize", help="A staging copy: run Odoo's own neutralization (mail "
                 "servers and crons off, payment providers in test mode) on the restored "
                 "database before the swap, before any Odoo starts on it."),
]  # fmt: skip


NeutralizeCommand = Annotated[
    str,
    typer.Option("--neutralize-command", envvar="ODBOX_NEUTRALIZE_COMMAND", metavar="COMMAND",
                 help="What --neutralize runs, with --db NAME appended (odbox-deploy's, which "
                 "reads odoo.conf from ODBOX_ODOO_CONF)."),
]  # fmt: skip


def _neutralizer(command: str, json: bool = False) -> Any:
    """restore --neutralize's step: `command --db NEW_DB`; a failure stops the restore."""
    import shlex
    import subprocess

    def run(new_db: str) -> None:
        argv = [*shlex.split(command), "--db", new_db]
        _log(json)(f"neutralizing {new_db}: {shlex.join(argv)}")
        try:
            done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise ToolError(f"cannot run `{shlex.join(argv)}` (--neutralize-command): {e}; "
                            "nothing was swapped") from None  # fmt: skip
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()
            raise ToolError(f"neutralizing the restored database failed"
                            f"{': ' + last[-1] if last else ''}; nothing was swapped")  # fmt: skip

    return run


def restore(
    db: Annotated[str, typer.Option("--db", envvar="ODBOX_DB", help="The live database.")],
    filestore: Annotated[
        Path, typer.Option("--filestore", envvar="ODBOX_FILESTORE", help="The live filestore.")
    ],
    repo: Annotated[
        str | None,
        typer.Option("--repo", "-r", envvar="ODBOX_BACKUP_REPO", metavar="REPO",
                     help="The repository: a folder, or s3://bucket/prefix."),
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Argument(help="A snapshot ID, a unique prefix, or latest (not with --resume)."),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            envvar="ODBOX_ODOO_ROLE",
            help="Role that owns the restored database and its tables "
            "(default: the live database's owner).",
        ),
    ] = None,
    dsn: Dsn = None,
    pg_bin: PgBin = None,
    odoo_service: OdooServiceName = None,
    odoo_stop: OdooStop = None,
    odoo_start: OdooStart = None,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    allow_missing_attachments: Annotated[
        bool,
        typer.Option(
            "--allow-missing-attachments",
            help="Swap in a restore whose database names attachments the snapshot lacks "
            "(the live filestore lacked them when it was taken); default: refuse.",
        ),
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", metavar="PATH",
                     help="Restore only this filestore file (repeat) into the live filestore; "
                     "the database and every other file are left alone."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="With --only: replace a file whose content differs.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Finish the swap of a restore that was killed during it "
                     "(its journal says what is left to do)."),
    ] = False,
    undo: Annotated[
        bool,
        typer.Option("--undo", help="Instead, put the previous database and filestore back "
                     "under the live names."),
    ] = False,
    neutralize: Neutralize = False,
    neutralize_command: NeutralizeCommand = "odbox-deploy neutralize",
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Restore into a new database and folder, verify, then swap them in (Odoo stopped).

    The previous live database and filestore are kept under new names. A restore killed
    during the swap is finished by --resume, or undone by --undo.
    """
    if only:
        return _restore_only(repo, snapshot, filestore, only, overwrite, identity, json)
    from psycopg.conninfo import make_conninfo

    from odbox_backup.report import progress_for, restored, swap_taken
    from odbox_backup.restore import Target
    from odbox_backup.restore import restore as do_restore
    from odbox_backup.restore import resume as do_resume
    from odbox_backup.service import OdooService

    service = OdooService.from_options(odoo_service, odoo_stop, odoo_start)
    log = _log(json)
    if resume or undo:
        if (resume and undo) or snapshot:
            raise UsageError("--resume and --undo take no snapshot, and not both")
        with progress_for(json) as progress:
            plan = do_resume(make_conninfo(dsn or "", dbname="postgres"), filestore, service,
                             progress, undo=undo)  # fmt: skip
        if json:
            console.print_json(swap_taken(plan, "undo" if undo else "resume"))
        if undo:
            log(f"undid {plan.describe()}: {plan.db} and {plan.folder} are the ones "
                "from before it again")  # fmt: skip
        else:
            log(f"finished {plan.describe()}; kept the previous ones as database "
                f"{plan.previous_db or '-'} and {plan.previous_folder or '-'}")  # fmt: skip
        return
    if repo is None or snapshot is None:
        raise UsageError("restore needs --repo and a snapshot (or --resume / --undo)")
    repository = _open(repo, identity, auth_key)
    snapshot_id = repository.resolve(snapshot, database=db)  # latest: latest of this database
    maintenance = make_conninfo(dsn or "", dbname="postgres")
    with _reading(repository, "restore"), progress_for(json) as progress:
        target = Target(maintenance, db, filestore, owner, pg_bin)
        prepare = _neutralizer(neutralize_command, json) if neutralize else None
        done = do_restore(repository, snapshot_id, target, service, progress,
                          allow_missing_attachments=allow_missing_attachments,
                          prepare=prepare)  # fmt: skip
    if json:
        console.print_json(restored(repository, done))
    missing = f" ({done.attachments_missing} missing)" if done.attachments_missing else ""
    log(
        f"restored snapshot {done.snapshot} as database {done.db} and {done.filestore}: "
        f"{count_of(done.files, 'file')}, {_size(done.bytes)}, "
        f"{count_of(done.attachments_checked, 'attachment')} "
        f"verified{missing}"
    )
    if done.previous_db or done.previous_filestore:
        log(
            f"kept the previous ones as database {done.previous_db or '-'} and "
            f"{done.previous_filestore or '-'}; drop them when you no longer need them"
        )


def _restore_only(repo: str | None, snapshot: str | None, filestore: Path, paths: list[str],
                  overwrite: bool, identity: Path | None, json: bool) -> None:  # fmt: skip
    from odbox_backup.browse import restore_only
    from odbox_backup.report import files_restored
    from odbox_backup.swap import refuse_if_interrupted, restore_lock

    if repo is None or snapshot is None:
        raise UsageError("restore --only needs --repo and a snapshot")
    repository = _open(repo, identity)
    snapshot_id = repository.resolve(snapshot)
    with restore_lock(filestore, "restore --only"), _reading(repository, "restore"):
        refuse_if_interrupted(filestore, "restore --only")
        done = restore_only(repository, snapshot_id, filestore, paths, overwrite)
    if json:
        console.print_json(files_restored(repository, snapshot_id, filestore, done))
    log = _log(json)
    for path in done.written:
        log(f"restored {filestore / path} from snapshot {snapshot_id}")
    for path in done.unchanged:
        log(f"left {filestore / path} alone: it is already as in snapshot {snapshot_id}")


def export(
    repo: Repo,
    snapshot: Annotated[str, typer.Argument(help="A snapshot ID, a unique prefix, or latest.")],
    odoo_zip: Annotated[
        Path,
        typer.Option("--odoo-zip", metavar="OUT",
                     help="Write the zip Odoo's database manager restores."),
    ],
    pg_bin: PgBin = None,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Export a snapshot as an Odoo backup zip (dump.sql, filestore/, manifest.json)."""
    from odbox_backup.odoozip import export_zip
    from odbox_backup.report import SCHEMA, progress_for

    repository = _open(repo, identity, auth_key)
    snapshot_id = repository.resolve(snapshot)
    with progress_for(json) as progress:
        done = export_zip(repository, snapshot_id, odoo_zip, pg_bin, progress)
    if json:
        console.print_json({"schema": SCHEMA, "repository": repository.store.url,
                            "snapshot": snapshot_id, "path": str(done.path), "files": done.files,
                            "bytes": done.bytes})  # fmt: skip
    _log(json)(f"wrote {done.path}: dump.sql and {count_of(done.files, 'file')} "
                f"({_size(done.bytes)}), "
                f"from snapshot {snapshot_id}")  # fmt: skip


def import_(
    repo: Repo,
    source: Annotated[
        Path, typer.Argument(metavar="FILE", help="An Odoo backup zip, or a backup folder.")
    ],
    db_name: Annotated[
        str | None,
        typer.Option("--db-name", help="The database's name (default: the zip's manifest)."),
    ] = None,
    wait: Wait = 0,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Make a snapshot from an Odoo backup zip or folder (dump.sql and filestore/)."""
    from odbox_backup.odoozip import import_backup
    from odbox_backup.report import progress_for, snapshot_made

    repository = _open(repo, identity, auth_key)
    with _locked(repository, "import", wait), progress_for(json) as progress:
        manifest = import_backup(repository, source, db_name=db_name, progress=progress)
    if json:
        console.print_json(snapshot_made(repository, manifest) | {"source": str(source)})
    t = manifest["totals"]
    _log(json)(
        f"snapshot {manifest['id']}: imported {source.name}, database "
        f"{manifest['database']['name']}, {count_of(manifest['filestore']['count'], 'file')}, "
        f"{_size(t['new_bytes'])} new in {count_of(t['new_objects'], 'object')}"
    )


def drop_previous(
    db: Annotated[str, typer.Option("--db", envvar="ODBOX_DB", help="The live database.")],
    filestore: Annotated[
        Path, typer.Option("--filestore", envvar="ODBOX_FILESTORE", help="The live filestore.")
    ],
    dsn: Dsn = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would go; drop nothing.")
    ] = False,
    leftovers_only: Annotated[
        bool,
        typer.Option("--leftovers", help="Drop only what killed restores left "
                     "(<db>_restore_*, <filestore>.restore-*); keep the previous copies."),
    ] = False,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Drop the databases and folders restores kept (<db>_before_*, <filestore>.before-*).

    Refused while a restore's swap is unfinished, or the live database or folder is missing
    (one of the copies may be all there is)."""
    from psycopg.conninfo import make_conninfo

    from odbox_backup.restore import find_previous, leftovers, refuse_without_live
    from odbox_backup.swap import refuse_if_interrupted, restore_lock

    maintenance = make_conninfo(dsn or "", dbname="postgres")
    with restore_lock(filestore, "drop-previous"):
        refuse_if_interrupted(filestore, "drop-previous")
        previous = find_previous(maintenance, db, filestore)
        if leftovers_only:
            previous = leftovers(previous)
        elif previous.databases or previous.folders:
            refuse_without_live(maintenance, db, filestore, previous)
        _drop_and_say(maintenance, previous, db, filestore, dry_run, json)


def _drop_and_say(maintenance: str, previous: Any, db: str, filestore: Path, dry_run: bool,
                  json: bool = False) -> None:  # fmt: skip
    from odbox_backup.report import dropped
    from odbox_backup.restore import drop_previous as do_drop

    log = _log(json)
    for name, sessions in previous.in_use.items():
        log(f"left database {name} alone: a restore is writing it ({', '.join(sessions)})")

    def ended(name: str) -> str:
        held = previous.sessions.get(name)
        verb = "ending" if dry_run else "ended"
        return f" ({verb} its sessions: {', '.join(held)})" if held else ""

    what = [f"database {d}{ended(d)}" for d in previous.databases]
    what += [str(f) for f in previous.folders]
    if not dry_run and what:
        do_drop(maintenance, previous)
    if json:
        console.print_json(dropped(db, filestore, previous, dry_run))
    if not what:
        log(f"nothing to drop: no copy kept by a restore of {db} or {filestore}")
        return
    for item in what:
        log(f"{'would drop' if dry_run else 'dropped'} {item}")
