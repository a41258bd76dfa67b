"""The `odbox-backup` command line: parses arguments and prints; the work is in the other modules.

Only typer and the standard library are imported at the top, so `--help` is
fast; boto3, psycopg, zstandard and pyrage load in the commands that use them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from odbox_backup import __version__
from odbox_common import console, runner
from odbox_common.console import count_of
from odbox_common.console import human_size as _size
from odbox_common.errors import ExitCode, ToolError, UsageError

if TYPE_CHECKING:
    from odbox_backup.repository import Repository

app = runner.typer_app(
    "odbox-backup",
    (
        "Versioned, deduplicated, encrypted snapshots of an Odoo database and filestore, "
        "in a local folder or on S3 (s3://bucket/prefix).\n\n"
        "Exit codes: 0 ok, 1 failed, 2 usage, 3 verify found problems, 4 another run holds "
        "the repository's lock."
    ),
)

Repo = Annotated[
    str,
    typer.Option(
        "--repo", "-r", envvar="ODBOX_BACKUP_REPO", metavar="REPO",
        help="The repository: a folder, or s3://bucket/prefix.",
    ),
]  # fmt: skip
Identity = Annotated[
    Path | None,
    typer.Option(
        "--identity", envvar="ODBOX_BACKUP_IDENTITY", metavar="FILE",
        help="age identity file or SSH private key, to read an encrypted repository.",
    ),
]  # fmt: skip
AuthKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--auth-key-file", envvar="ODBOX_BACKUP_AUTH_KEY_FILE", metavar="FILE",
        help="The repository's authentication key (init writes it; keep a copy with the "
        "identity, never in the repository).",
    ),
]  # fmt: skip
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document instead.")]
Dsn = Annotated[
    str | None,
    typer.Option("--dsn", envvar="ODBOX_DSN", help="libpq connection string (default: PG*)."),
]
PgBin = Annotated[
    Path | None,
    typer.Option("--pg-bin", envvar="ODBOX_PG_BIN", help="Folder of pg_dump, pg_restore, psql."),
]
OdooServiceName = Annotated[
    str | None,
    typer.Option("--odoo-service", envvar="ODBOX_ODOO_SERVICE", metavar="UNIT",
                 help="Stop and start Odoo with systemctl stop/start UNIT."),
]  # fmt: skip
OdooStop = Annotated[
    str | None,
    typer.Option("--odoo-stop", envvar="ODBOX_ODOO_STOP", metavar="COMMAND",
                 help="Command that stops Odoo (with --odoo-start)."),
]  # fmt: skip
OdooStart = Annotated[
    str | None,
    typer.Option("--odoo-start", envvar="ODBOX_ODOO_START", metavar="COMMAND",
                 help="Command that starts Odoo again, run even when the work fails."),
]  # fmt: skip
Wait = Annotated[
    float, typer.Option("--wait", min=0, metavar="SECONDS", help="Wait this long for a lock.")
]
Debug = Annotated[
    bool, typer.Option("--debug", envvar="ODBOX_BACKUP_DEBUG", help="Show a traceback on errors.")
]
MetricsFile = Annotated[
    Path | None,
    typer.Option("--metrics-file", envvar="ODBOX_BACKUP_METRICS_FILE", metavar="PATH",
                 help="Write node_exporter textfile metrics there when done, failed or not "
                 "(the other commands' lines in it are kept)."),
]  # fmt: skip
Tags = Annotated[
    list[str] | None,
    typer.Option("--tag", metavar="NAME", help="Tag the new snapshot NAME (repeat)."),
]
TagSelection = Annotated[
    list[str] | None,
    typer.Option("--tag", metavar="A[,B…]",
                 help="Only snapshots with all of these tags (repeat: any of the lists)."),
]  # fmt: skip


def _open(repo: str, identity: Path | None = None, auth_key: Path | None = None) -> Repository:
    """The repository; the authentication key is `auth_key`, else ODBOX_BACKUP_AUTH_KEY_FILE's."""
    from odbox_backup.repository import AuthKey, Repository
    from odbox_backup.store import open_store
    from odbox_common.age import load_identities

    identities: list[Any] = []
    if identity is not None:
        try:
            identities = load_identities(identity.read_bytes(), str(identity))
        except OSError as e:
            raise UsageError(f"cannot read the identity {identity}: {e.strerror}") from e
    key = AuthKey.load(auth_key) if auth_key is not None else None
    repository = Repository.open(open_store(repo), identities, key)
    repository.warn = console.warn
    if repository.auth is None:
        console.warn(
            f"{repo} is a version {repository.config.version} repository: its files are not "
            "authenticated, so whoever could write to it could have forged them"
        )
    return repository


def _log(json: bool) -> Any:
    """Where a command's progress lines go: stdout, or stderr when --json owns stdout."""
    return (lambda text: console.say(text, sys.stderr)) if json else console.say


@contextlib.contextmanager
def _locked(repository: Repository, command: str, wait: float) -> Iterator[None]:
    """The repository's lock for a writing command; says which stale locks it removed."""
    from odbox_backup import locks

    mode = "prune" if command == "prune" else "write"
    with locks.exclusive(repository.store, f"odbox-backup {command}", repository.config.id,
                         wait=wait, mode=mode) as stale:  # fmt: skip
        for lock in stale:
            console.warn(f"removed a stale lock: {lock.describe()}")
        yield


@contextlib.contextmanager
def _reading(repository: Repository, command: str, wait: float = 0) -> Iterator[None]:
    """A reader's lock, which a prune respects (and waits for or refuses). Where the lock
    cannot be written (read-only credentials), the command reads without it, saying so."""
    from odbox_backup import locks
    from odbox_backup.store import StoreError

    with contextlib.ExitStack() as held:
        try:
            lock = locks.exclusive(repository.store, f"odbox-backup {command}",
                                   repository.config.id, wait=wait, mode="read")  # fmt: skip
            held.enter_context(lock)
        except StoreError as e:
            console.warn(f"reading without a lock ({e}): a prune meanwhile could make this "
                         f"{command} see objects go")  # fmt: skip
        yield


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
    debug: Debug = False,
) -> None:  # fmt: skip
    """Make a new, empty repository (encrypted when given recipients)."""
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
    if new_key:
        console.say(f"wrote a new authentication key to {auth_key}: keep a copy with the "
                    "identity (the vault); every command on this repository needs it")  # fmt: skip
    kind = (
        f"encrypted to {count_of(len(created.config.recipients), 'recipient')}"
        if created.config.encrypted
        else "not encrypted"
    )
    console.say(f"created repository {repo} ({kind})")


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
    debug: Debug = False,
) -> None:  # fmt: skip
    """Back up the database, then the filestore, into a new snapshot."""
    from odbox_backup import metrics

    metrics.begin("run", repo, metrics_file, cache_dir)
    from psycopg.conninfo import make_conninfo

    from odbox_backup import cache
    from odbox_backup.backup import Source, run_backup
    from odbox_backup.progress import progress_for
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
            service.stopped(console.say) if cold else contextlib.nullcontext(),
            progress_for() as progress,
        ):
            manifest = run_backup(repository, source, previous=previous, progress=progress,
                                  tags=tags)  # fmt: skip
        if folder and (reason := cache.save(folder, repository, manifest)):
            console.warn(reason)
    t = manifest["totals"]
    metrics.note(last_bytes_added=t["new_bytes"], snapshots=len(repository.snapshot_ids()),
                 snapshot=manifest["id"], database=db)  # fmt: skip
    missing = manifest["filestore"].get("missing", 0)
    console.say(
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


@app.command("list")
def list_(repo: Repo, identity: Identity = None, auth_key: AuthKeyFile = None, json: Json = False,
          tag: TagSelection = None, debug: Debug = False) -> None:  # fmt: skip
    """List the snapshots (details need the identity of an encrypted repository)."""
    from odbox_backup import cache
    from odbox_backup.repository import Unauthenticated, snapshot_time
    from odbox_backup.tags import matches, parse_selection, tags_of

    selection = parse_selection(tag or [])
    repository = _open(repo, identity, auth_key)
    if selection and repository.config.encrypted and not repository.identities:
        raise UsageError("--tag reads the tags in the encrypted manifests: pass --identity")
    rows = []
    details = not repository.config.encrypted or bool(repository.identities)
    # the manifests checked before, by their stored bytes' tag: only new ones are fetched
    listed = cache.Listed(cache.list_dir(), repository)
    for snapshot_id in repository.snapshot_ids():
        row = listed.row(snapshot_id, details)
        if row is None:
            row = {"id": snapshot_id, "time": snapshot_time(snapshot_id).isoformat()}
            try:
                repository.check_snapshot(snapshot_id)
            except Unauthenticated as e:
                console.warn(f"left out {e}")
                continue
            if details:
                m = repository.read_snapshot(snapshot_id)
                row |= {"host": m["host"], "mode": m["mode"], "database": m["database"]["name"],
                        "files": m["filestore"]["count"], "bytes": m["totals"]["bytes"],
                        "tags": tags_of(m)}  # fmt: skip
            listed.add(snapshot_id, row, details)
        if selection and not matches(row.get("tags", []), selection):
            continue
        rows.append(row)
    listed.save()
    if json:
        console.print_json(rows)
        return
    columns = ["id", "time", "host", "mode", "database", "files", "size", "tags"]
    console.table(
        f"snapshots in {repo}",
        columns,
        [[str(r["id"]), str(r["time"]), str(r.get("host", "?")), str(r.get("mode", "?")),
          str(r.get("database", "?")), str(r.get("files", "?")),
          _size(r["bytes"]) if "bytes" in r else "?",
          ",".join(r["tags"]) if "tags" in r else "?"] for r in rows],
    )  # fmt: skip


@app.command()
def show(
    repo: Repo,
    snapshot: Annotated[str, typer.Argument(help="A snapshot ID, a unique prefix, or latest.")],
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Show one snapshot's manifest."""
    repository = _open(repo, identity, auth_key)
    manifest = repository.read_snapshot(repository.resolve(snapshot), compact=False)
    if json:
        console.print_json(manifest)
        return
    db, fs, odoo = manifest["database"], manifest["filestore"], manifest["odoo"]
    console.table(
        f"snapshot {manifest['id']}",
        ["", ""],
        [["time", manifest["time"]], ["host", manifest["host"]], ["mode", manifest["mode"]],
         ["database", f"{db['name']} (PostgreSQL {db['pg_version']}), dump {_size(db['size'])}"],
         ["odoo", f"{odoo.get('version') or '?'}, {len(odoo.get('modules', {}))} modules"],
         ["filestore", f"{count_of(fs['count'], 'file')}, {_size(fs['bytes'])}"],
         ["tags", ", ".join(manifest.get("tags", [])) or "-"]],
    )  # fmt: skip


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


def _neutralizer(command: str) -> Any:
    """restore --neutralize's step: `command --db NEW_DB`; a failure stops the restore."""
    import shlex
    import subprocess

    def run(new_db: str) -> None:
        argv = [*shlex.split(command), "--db", new_db]
        console.say(f"neutralizing {new_db}: {shlex.join(argv)}")
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


@app.command()
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
    debug: Debug = False,
) -> None:  # fmt: skip
    """Restore into a new database and folder, verify, then swap them in (Odoo stopped).

    The previous live database and filestore are kept under new names. A restore killed
    during the swap is finished by --resume, or undone by --undo.
    """
    if only:
        return _restore_only(repo, snapshot, filestore, only, overwrite, identity)
    from psycopg.conninfo import make_conninfo

    from odbox_backup.progress import progress_for
    from odbox_backup.restore import Target
    from odbox_backup.restore import restore as do_restore
    from odbox_backup.restore import resume as do_resume
    from odbox_backup.service import OdooService

    service = OdooService.from_options(odoo_service, odoo_stop, odoo_start)
    if resume or undo:
        if (resume and undo) or snapshot:
            raise UsageError("--resume and --undo take no snapshot, and not both")
        with progress_for() as progress:
            plan = do_resume(make_conninfo(dsn or "", dbname="postgres"), filestore, service,
                             progress, undo=undo)  # fmt: skip
        if undo:
            console.say(f"undid {plan.describe()}: {plan.db} and {plan.folder} are the ones "
                        "from before it again")  # fmt: skip
        else:
            console.say(f"finished {plan.describe()}; kept the previous ones as database "
                        f"{plan.previous_db or '-'} and {plan.previous_folder or '-'}")  # fmt: skip
        return
    if repo is None or snapshot is None:
        raise UsageError("restore needs --repo and a snapshot (or --resume / --undo)")
    repository = _open(repo, identity, auth_key)
    snapshot_id = repository.resolve(snapshot, database=db)  # latest: latest of this database
    maintenance = make_conninfo(dsn or "", dbname="postgres")
    with _reading(repository, "restore"), progress_for() as progress:
        target = Target(maintenance, db, filestore, owner, pg_bin)
        prepare = _neutralizer(neutralize_command) if neutralize else None
        done = do_restore(repository, snapshot_id, target, service, progress,
                          allow_missing_attachments=allow_missing_attachments,
                          prepare=prepare)  # fmt: skip
    missing = f" ({done.attachments_missing} missing)" if done.attachments_missing else ""
    console.say(
        f"restored snapshot {done.snapshot} as database {done.db} and {done.filestore}: "
        f"{count_of(done.files, 'file')}, {_size(done.bytes)}, "
        f"{count_of(done.attachments_checked, 'attachment')} "
        f"verified{missing}"
    )
    if done.previous_db or done.previous_filestore:
        console.say(
            f"kept the previous ones as database {done.previous_db or '-'} and "
            f"{done.previous_filestore or '-'}; drop them when you no longer need them"
        )


@app.command()
def verify(
    repo: Repo,
    snapshot: Annotated[
        str | None, typer.Argument(help="One snapshot (ID, prefix or latest); default: all.")
    ] = None,
    read_data: Annotated[
        bool,
        typer.Option("--read-data", help="Read every object and check its content and sizes."),
    ] = False,
    read_data_subset: Annotated[
        str | None,
        typer.Option(
            "--read-data-subset",
            metavar="N%|SIZE|n/t",
            help="--read-data of a part: N% or SIZE (500M) of the stored bytes, least "
            "recently read first, or the n-th of t fixed parts (restic's forms).",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            envvar="ODBOX_BACKUP_CACHE",
            metavar="DIR",
            help="Where --read-data-subset keeps what it read (default: as run's).",
        ),
    ] = None,
    wait: Wait = 0,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    metrics_file: MetricsFile = None,
    debug: Debug = False,
) -> None:
    """Check that every snapshot is whole (exit 3 when one is not)."""
    from odbox_backup import metrics
    from odbox_backup.progress import progress_for
    from odbox_backup.verify import verify as do_verify

    metrics.begin("verify", repo, metrics_file, cache_dir)
    repository = _open(repo, identity, auth_key)
    rotation = _rotation(repository, read_data_subset, cache_dir)
    read_data = read_data or rotation is not None
    if read_data and repository.config.encrypted and not repository.identities:
        raise UsageError(
            "--read-data reads every object of this encrypted repository: pass --identity "
            "(without both, verify checks the MACs and that everything is there at its size)"
        )
    with _reading(repository, "verify", wait), progress_for(json) as progress:
        ids = [repository.resolve(snapshot)] if snapshot else repository.snapshot_ids()
        if read_data:
            progress.phase(f"reading the objects of {count_of(len(ids), 'snapshot')}")
        report = do_verify(repository, ids, read_data=read_data, progress=progress.advance,
                           subset=rotation)  # fmt: skip
    if rotation is not None and report.subset is not None:
        rotation.done(set(report.subset) - report.damaged_keys)
    metrics.note(last_bytes_read=report.bytes_read, snapshots=len(ids) if not snapshot else None,
                 problems=len(report.problems))  # fmt: skip
    if json:
        console.print_json(report.to_json())
    else:
        for problem in report.problems:
            console.warn(problem)
        verdict = "ok" if report.ok else f"{len(report.problems)} PROBLEMS"
        leftovers = f"{count_of(report.leftovers, 'temp file')}" + (
            f", {count_of(report.orphan_packs, 'pack')} a killed run left"
            if report.orphan_packs
            else ""
        )
        if report.keyless:
            authentic = sum(1 for s in report.snapshots if s.ok)
            console.say(
                f"verify {verdict}: {authentic} of {count_of(len(ids), 'snapshot')} authenticated, "
                f"{count_of(report.objects_referenced, 'object')} present at their sizes (without "
                f"--identity: no content read; {leftovers})"
            )
        else:
            what = "every object read and checked" if read_data else "every object present"
            if report.subset is not None:
                share = report.subset_bytes / report.stored_bytes if report.stored_bytes else 1
                what = (f"read {len(report.subset)} packs and objects alone, "
                        f"{_size(report.subset_bytes)} of {_size(report.stored_bytes)} "
                        f"({share:.1%}), {_size(report.bytes_read)} of content")  # fmt: skip
            console.say(
                f"verify {verdict}: {count_of(len(ids), 'snapshot')}, "
                f"{count_of(report.objects_referenced, 'object')} "
                f"({what}; {count_of(report.objects_unreferenced, 'unused object')}, {leftovers})"
            )
    if not report.ok:
        raise typer.Exit(int(ExitCode.PROBLEMS))


def _rotation(repository: Repository, spec: str | None, cache_dir: Path | None) -> Any:
    """`--read-data-subset`'s chooser, or None."""
    if spec is None:
        return None
    from odbox_backup import cache
    from odbox_backup.subset import Rotation, Subset

    return Rotation(Subset.parse(spec), cache_dir or cache.default_dir(), repository.store.url,
                    repository.config.id)  # fmt: skip


def _keep(kind: str) -> Any:
    return typer.Option(f"--keep-{kind}", min=0, metavar="N",
                        help=f"Keep the newest snapshot of each of the last N {kind} periods."
                        if kind != "last" else "Keep the N newest snapshots.")  # fmt: skip


def _within(kind: str) -> Any:
    flag = f"--keep-within-{kind}" if kind else "--keep-within"
    unit = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month",
            "yearly": "year"}.get(kind)  # fmt: skip
    what = f"the newest snapshot of each {unit}" if unit else "every snapshot"
    return typer.Option(flag, metavar="DURATION",
                        help=f"Keep {what} among those less than DURATION (1y5m7d2h) older "
                        "than the newest.")  # fmt: skip


@app.command()
def prune(
    repo: Repo,
    keep_last: Annotated[int, _keep("last")] = 0,
    keep_hourly: Annotated[int, _keep("hourly")] = 0,
    keep_daily: Annotated[int, _keep("daily")] = 0,
    keep_weekly: Annotated[int, _keep("weekly")] = 0,
    keep_monthly: Annotated[int, _keep("monthly")] = 0,
    keep_yearly: Annotated[int, _keep("yearly")] = 0,
    keep_within: Annotated[str, _within("")] = "",
    keep_within_hourly: Annotated[str, _within("hourly")] = "",
    keep_within_daily: Annotated[str, _within("daily")] = "",
    keep_within_weekly: Annotated[str, _within("weekly")] = "",
    keep_within_monthly: Annotated[str, _within("monthly")] = "",
    keep_within_yearly: Annotated[str, _within("yearly")] = "",
    keep_tag: Annotated[
        list[str] | None,
        typer.Option("--keep-tag", metavar="A[,B…]",
                     help="Keep every snapshot with all of these tags (repeat), whatever else."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would go; delete nothing.")
    ] = False,
    group_by: Annotated[
        str,
        typer.Option("--group-by", metavar="FIELDS",
                     help="Apply the policy to each group of snapshots with the same host, db, "
                     "tags or several (restic's --group-by); '' for one group."),
    ] = "host,db",
    wait: Wait = 0,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    metrics_file: MetricsFile = None,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Forget snapshots as restic's forget would for the same --keep-*, delete unused objects."""
    from odbox_backup import metrics

    metrics.begin("prune", repo, metrics_file)
    from odbox_backup.prune import Duration, Policy, explain, parse_group_by
    from odbox_backup.prune import prune as do_prune
    from odbox_backup.tags import parse_selection

    def within(text: str, kind: str = "") -> Duration:
        return (
            Duration.parse(text, f"--keep-within-{kind}" if kind else "--keep-within")
            if text
            else Duration()
        )

    policy = Policy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly,
                    tags=tuple(map(tuple, parse_selection(keep_tag or []))),
                    within=within(keep_within), within_hourly=within(keep_within_hourly, "hourly"),
                    within_daily=within(keep_within_daily, "daily"),
                    within_weekly=within(keep_within_weekly, "weekly"),
                    within_monthly=within(keep_within_monthly, "monthly"),
                    within_yearly=within(keep_within_yearly, "yearly"))  # fmt: skip
    fields = parse_group_by(group_by)
    repository = _open(repo, identity, auth_key)
    repository.require_writable()
    log = _log(json)
    with _locked(repository, "prune", wait):
        result = do_prune(repository, policy, dry_run=dry_run, report=log, group_by=fields)
    metrics.note(
        last_objects_deleted=0 if dry_run else result.objects_deleted,
        snapshots=len(result.decisions) - (0 if dry_run else len(result.forgotten)),
    )
    if json:
        console.print_json({
            "dry_run": dry_run,
            "policy": policy.describe(),
            "group_by": list(fields),
            "snapshots": [{"id": d.id, "group": d.group, "keep": d.keep, "reasons": d.reasons}
                          for d in result.decisions],
            "unauthenticated": result.unauthenticated,
            "forgotten": result.forgotten,
            "objects_deleted": result.objects_deleted,
            "packs_rewritten": result.packs_rewritten,
        })  # fmt: skip
        return
    console.table(f"{policy.describe()}{' (dry run)' if dry_run else ''}",
                  ["id", "time", "group", "action", "reasons"],
                  explain(result.decisions))  # fmt: skip
    verb = "would forget" if dry_run else "forgot"
    console.say(
        f"{verb} {len(result.forgotten)} of {count_of(len(result.decisions), 'snapshot')} and "
        f"{'would delete' if dry_run else 'deleted'} "
        f"{count_of(result.objects_deleted, 'unused object')}"
        + (
            f" ({'would rewrite' if dry_run else 'rewrote'} "
            f"{count_of(result.packs_rewritten, 'pack')})"
            if result.packs_rewritten
            else ""
        )
    )


@app.command()
def copy(
    repo: Repo,
    snapshots: Annotated[
        list[str], typer.Argument(help="Snapshots to copy (IDs, prefixes, latest, or all).")
    ],
    to: Annotated[str, typer.Option("--to", metavar="REPO", help="The destination repository.")],
    wait: Wait = 0,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    to_auth_key: Annotated[
        Path | None,
        typer.Option("--to-auth-key-file", envvar="ODBOX_BACKUP_TO_AUTH_KEY_FILE", metavar="FILE",
                     help="The destination's authentication key (default: --auth-key-file's)."),
    ] = None,
    limit_upload: Annotated[
        int | None,
        typer.Option("--limit-upload", min=1, metavar="KiB/s",
                     help="Send the destination at most this many KiB a second (restic's flag)."),
    ] = None,
    metrics_file: MetricsFile = None,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Copy snapshots into another repository (offsite), sending only what it lacks."""
    from odbox_backup import metrics
    from odbox_backup.copy import copy_snapshot
    from odbox_backup.progress import progress_for

    metrics.begin("copy", to, metrics_file)
    sent = 0

    source = _open(repo, identity, auth_key)
    destination = _open(to, None, to_auth_key or auth_key)
    destination.require_writable()
    if limit_upload is not None:
        from odbox_backup.store import limit_uploads

        limit_uploads(destination.store, limit_upload)
    if destination.config.id == source.config.id:
        raise UsageError("--to names the repository itself")
    ids = source.snapshot_ids() if snapshots == ["all"] else [source.resolve(s) for s in snapshots]
    with _reading(source, "copy", wait), _locked(destination, "copy", wait):
        for snapshot_id in dict.fromkeys(ids):
            with progress_for() as progress:
                done = copy_snapshot(source, destination, snapshot_id, progress)
            sent += done.bytes_sent
            if done.already_there:
                console.say(f"snapshot {snapshot_id} is already in {to}")
            else:
                console.say(f"copied snapshot {snapshot_id} to {to}: "
                            f"{count_of(done.objects_sent, 'object')}, "
                            f"{_size(done.bytes_sent)} sent")  # fmt: skip
    metrics.note(last_bytes_added=sent, snapshots=len(destination.snapshot_ids()))


@app.command("export")
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
    debug: Debug = False,
) -> None:  # fmt: skip
    """Export a snapshot as an Odoo backup zip (dump.sql, filestore/, manifest.json)."""
    from odbox_backup.odoozip import export_zip
    from odbox_backup.progress import progress_for

    repository = _open(repo, identity, auth_key)
    snapshot_id = repository.resolve(snapshot)
    with progress_for() as progress:
        done = export_zip(repository, snapshot_id, odoo_zip, pg_bin, progress)
    console.say(f"wrote {done.path}: dump.sql and {count_of(done.files, 'file')} "
                f"({_size(done.bytes)}), "
                f"from snapshot {snapshot_id}")  # fmt: skip


@app.command("import")
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
    debug: Debug = False,
) -> None:
    """Make a snapshot from an Odoo backup zip or folder (dump.sql and filestore/)."""
    from odbox_backup.odoozip import import_backup
    from odbox_backup.progress import progress_for

    repository = _open(repo, identity, auth_key)
    with _locked(repository, "import", wait), progress_for() as progress:
        manifest = import_backup(repository, source, db_name=db_name, progress=progress)
    t = manifest["totals"]
    console.say(
        f"snapshot {manifest['id']}: imported {source.name}, database "
        f"{manifest['database']['name']}, {count_of(manifest['filestore']['count'], 'file')}, "
        f"{_size(t['new_bytes'])} new in {count_of(t['new_objects'], 'object')}"
    )


@app.command("drop-previous")
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
        _drop_and_say(maintenance, previous, db, filestore, dry_run)


def _drop_and_say(maintenance: str, previous: Any, db: str, filestore: Path, dry_run: bool) -> None:
    from odbox_backup.restore import drop_previous as do_drop

    for name, sessions in previous.in_use.items():
        console.say(f"left database {name} alone: a restore is writing it ({', '.join(sessions)})")

    def ended(name: str) -> str:
        held = previous.sessions.get(name)
        verb = "ending" if dry_run else "ended"
        return f" ({verb} its sessions: {', '.join(held)})" if held else ""

    what = [f"database {d}{ended(d)}" for d in previous.databases]
    what += [str(f) for f in previous.folders]
    if not what:
        console.say(f"nothing to drop: no copy kept by a restore of {db} or {filestore}")
        return
    if not dry_run:
        do_drop(maintenance, previous)
    for item in what:
        console.say(f"{'would drop' if dry_run else 'dropped'} {item}")


tag_app = runner.typer_app(
    "tag", "Add or remove a snapshot's tags (its manifest is written again)."
)
app.add_typer(tag_app, name="tag")
TagNames = Annotated[list[str], typer.Argument(metavar="NAME...", help="The tags.")]
TagSnapshot = Annotated[str, typer.Argument(help="A snapshot ID, a unique prefix, or latest.")]


def _change_tags(repo: str, snapshot: str, identity: Path | None, auth_key: Path | None,
                 wait: float, json: bool, add: list[str], remove: list[str]) -> None:  # fmt: skip
    from odbox_backup.tags import change_tags, check_tags

    check_tags(add + remove)  # a bad name is refused before the repository is opened
    repository = _open(repo, identity, auth_key)
    with _locked(repository, "tag", wait):
        snapshot_id = repository.resolve(snapshot)
        tags, changed = change_tags(repository, snapshot_id, add, remove)
    if json:
        console.print_json({"id": snapshot_id, "tags": tags, "changed": changed})
        return
    now = ", ".join(tags) or "none"
    console.say(f"snapshot {snapshot_id}: tags {now}" + ("" if changed else " (unchanged)"))


@tag_app.command("add")
def tag_add(repo: Repo, snapshot: TagSnapshot, names: TagNames, wait: Wait = 0,
            identity: Identity = None, auth_key: AuthKeyFile = None, json: Json = False,
            debug: Debug = False) -> None:  # fmt: skip
    """Add tags to a snapshot (prune --keep-tag NAME then keeps it)."""
    _change_tags(repo, snapshot, identity, auth_key, wait, json, names, [])


@tag_app.command("remove")
def tag_remove(repo: Repo, snapshot: TagSnapshot, names: TagNames, wait: Wait = 0,
               identity: Identity = None, auth_key: AuthKeyFile = None, json: Json = False,
               debug: Debug = False) -> None:  # fmt: skip
    """Remove tags from a snapshot."""
    _change_tags(repo, snapshot, identity, auth_key, wait, json, [], names)


ManifestPath = Annotated[
    str,
    typer.Argument(metavar="PATH", help="A file in the filestore, as ab/ab12… (ls: or a folder)."),
]


@app.command("ls")
def ls(
    repo: Repo,
    snapshot: TagSnapshot,
    path: Annotated[
        str, typer.Argument(metavar="[PATH]", help="A file or folder (default: all).")
    ] = "",
    names: Annotated[
        bool,
        typer.Option("--names/--no-names",
                     help="The attachments of each file (name, model, res_id) from the dump's "
                     "ir_attachment rows; default: when the dump can be read."),
    ] = True,
    pg_bin: PgBin = None,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """List a snapshot's filestore files (and the attachments they are), without a restore."""
    from odbox_backup.browse import list_files, readable

    repository = _open(repo, identity, auth_key)
    snapshot_id = repository.resolve(snapshot)
    names = names and readable(repository)
    with _reading(repository, "ls"):
        entries = list_files(repository, snapshot_id, path, names=names, pg_bin=pg_bin)
    if json:
        console.print_json([e.to_json(names) for e in entries])
        return
    if not entries and path:
        raise ToolError(f"snapshot {snapshot_id} holds no {path!r} in its filestore")
    for e in entries:  # plain lines (no timestamp, whatever stdout is): for grep and awk
        described = "; ".join(a.describe() for a in e.attachments)
        extra = f"  {described or 'no attachment'}" if names else ""
        sys.stdout.write(f"{e.size:>12}  {e.path}{extra}\n")


@app.command("dump")
def dump(
    repo: Repo,
    snapshot: TagSnapshot,
    path: ManifestPath,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write it here (0600, atomically), not stdout."),
    ] = None,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Write one filestore file of a snapshot to stdout or --out."""
    from odbox_backup.browse import atomic_file, manifest_text, one_entry, write_content

    repository = _open(repo, identity, auth_key)
    snapshot_id = repository.resolve(snapshot)
    with _reading(repository, "dump"):
        entry = one_entry(manifest_text(repository, snapshot_id), path, snapshot_id)
        if out is None:
            write_content(repository, entry, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        try:
            with atomic_file(out) as f:
                write_content(repository, entry, f)
        except OSError as e:
            raise ToolError(f"cannot write {out}: {e.strerror}") from e
    console.say(f"wrote {out}: {entry.path} of snapshot {snapshot_id}, {_size(entry.size)}",
                sys.stderr)  # fmt: skip


def _restore_only(repo: str | None, snapshot: str | None, filestore: Path, paths: list[str],
                  overwrite: bool, identity: Path | None) -> None:  # fmt: skip
    from odbox_backup.browse import restore_only
    from odbox_backup.swap import refuse_if_interrupted, restore_lock

    if repo is None or snapshot is None:
        raise UsageError("restore --only needs --repo and a snapshot")
    repository = _open(repo, identity)
    snapshot_id = repository.resolve(snapshot)
    with restore_lock(filestore, "restore --only"), _reading(repository, "restore"):
        refuse_if_interrupted(filestore, "restore --only")
        done = restore_only(repository, snapshot_id, filestore, paths, overwrite)
    for path in done.written:
        console.say(f"restored {filestore / path} from snapshot {snapshot_id}")
    for path in done.unchanged:
        console.say(f"left {filestore / path} alone: it is already as in snapshot {snapshot_id}")


@contextlib.contextmanager
def _manifest_reader(
    repo: str, identity: Path | None, auth_key: Path | None, command: str
) -> Iterator[Repository]:
    """The repository, under a reader's lock, for a command that reads manifests."""
    repository = _open(repo, identity, auth_key)
    if repository.config.encrypted and not repository.identities:
        raise UsageError(f"{command} reads the encrypted manifests: pass --identity")
    with _reading(repository, command):
        yield repository


@app.command("stats")
def stats(
    repo: Repo,
    snapshots: Annotated[
        list[str] | None, typer.Argument(help="Snapshots (IDs, prefixes, latest); default: all.")
    ] = None,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Raw and deduplicated sizes, per snapshot and in total, and the last 30 days' growth."""
    from odbox_backup.stats import stats as do_stats

    with _manifest_reader(repo, identity, auth_key, "stats") as repository:
        ids = [repository.resolve(s) for s in snapshots] if snapshots else repository.snapshot_ids()
        result = do_stats(repository, list(dict.fromkeys(ids)), warn=console.warn)
    if json:
        console.print_json(result.to_json())
        return
    console.table(
        f"snapshots in {repo}",
        ["id", "database", "files", "raw", "stored", "added", "tags"],
        [[r.id, r.database, str(r.files), _size(r.raw_bytes), _size(r.stored_bytes),
          _size(r.added_bytes), ",".join(r.tags)] for r in result.snapshots],
    )  # fmt: skip
    console.say(
        f"total: {_size(result.raw_bytes)} raw in {len(result.snapshots)} snapshots, "
        f"{_size(result.stored_bytes)} stored in {result.objects} objects "
        f"({result.ratio:.1f}x smaller); the repository takes {_size(result.repository_bytes)}"
    )
    console.say(
        f"last {result.growth_days} days: {result.growth_snapshots} snapshots added "
        f"{_size(result.growth_bytes)}"
    )


@app.command("diff")
def diff(
    repo: Repo,
    old: Annotated[str, typer.Argument(metavar="ID1", help="The older snapshot (or latest…).")],
    new: Annotated[str, typer.Argument(metavar="ID2", help="The newer snapshot.")],
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Files added, removed and changed between two snapshots, and whether the dump changed."""
    from odbox_backup.stats import diff as do_diff

    with _manifest_reader(repo, identity, auth_key, "diff") as repository:
        result = do_diff(repository, repository.resolve(old), repository.resolve(new))
    if json:
        console.print_json(result.to_json())
        return
    for sign, changes in (("+", result.added), ("-", result.removed), ("M", result.changed)):
        for c in changes:
            sys.stdout.write(f"{sign} {c.path}  {_size(c.size)}\n")
    dump = (
        "the same dump (reused)"
        if result.dump_reused
        else f"a new dump ({result.dump_objects_new} chunks new, {result.dump_objects_shared} "
        f"shared; {_size(result.dump_bytes_old)} -> {_size(result.dump_bytes_new)})"
    )
    console.say(
        f"from {result.old} to {result.new}: {len(result.added)} files added, "
        f"{len(result.removed)} removed, {len(result.changed)} changed, {result.unchanged} "
        f"unchanged; {dump}"
    )


import odbox_backup.cli_recipients  # noqa: E402,F401  (recipients list/add/remove/rewrap: registered on app)
from odbox_backup import cli_ops  # noqa: E402,F401  (status, notify, unlock, repair: registered on app)


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
