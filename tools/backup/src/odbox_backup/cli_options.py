"""What every `odbox-backup` command shares: the app they are registered on, the option
types, and opening and locking a repository. Only typer and the standard library at the top,
so `--help` stays fast."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from odbox_common import console, runner
from odbox_common.errors import UsageError

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
    float,
    typer.Option(
        "--wait",
        min=0,
        metavar="SECONDS",
        envvar="ODBOX_BACKUP_WAIT",
        help="Wait this long for a lock.",
    ),
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
