"""The copies a restore keeps (`<db>_before_<time>`, `<folder>.before-<time>`) and what a
killed restore leaves (`_restore_`, `.restore-`): their names, and `odbox-backup
drop-previous`, which finds and drops them."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from odbox_backup import swap
from odbox_backup.restore_checks import RestoreFailed, Target, connect, exists
from odbox_common.files import fsync_dir

STAMP = r"\d{8}T\d{6}Z"
NAMEDATALEN = 63  # bytes in a PostgreSQL name
LONGEST_SUFFIX = len("_before_20260101T000000Z")


def kept_base(db: str) -> str:
    """What the names of `db`'s kept and restored copies start with: `db` itself, or, when
    `db` + `_before_<time>` would pass PostgreSQL's 63 bytes (which cuts a name silently: a
    51-character name lost its time, and the next restore waited forever for a free one),
    its first bytes and a hash of the whole name."""
    import hashlib

    if len(db.encode()) + LONGEST_SUFFIX <= NAMEDATALEN:
        return db
    digest = hashlib.sha256(db.encode()).hexdigest()[:8]
    head = db.encode()[: NAMEDATALEN - LONGEST_SUFFIX - 9].decode(errors="ignore")
    return f"{head}_{digest}"


def previous_names(target: Target, live_exists: bool) -> tuple[str | None, Path | None]:
    """`<db>_before_<UTC second>` and `<folder>.before-<UTC second>`, for a second no earlier
    restore used (two restores within a second: the second one waits for the next)."""
    import time

    with connect(target.conninfo) as conn:
        for _ in range(50):  # 10 s: more means the names do not change with the second
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            db = f"{kept_base(target.db)}_before_{stamp}" if live_exists else None
            folder = (
                target.filestore.with_name(f"{target.filestore.name}.before-{stamp}")
                if target.filestore.exists()
                else None
            )
            if not (db and exists(conn, db)[0]) and not (folder and folder.exists()):
                return db, folder
            time.sleep(0.2)
    raise RestoreFailed(
        f"{db} and {folder} exist whatever the time: remove them; nothing was swapped"
    )


@dataclass
class Previous:
    """What restores left next to the live database and filestore."""

    databases: list[str]
    folders: list[Path]
    # the sessions open on a database to drop ("pid 123 of odoo (psql)"): ended by the drop
    sessions: dict[str, list[str]] = field(default_factory=dict)
    # `_restore_` databases a restore is writing now, with their sessions: left alone
    in_use: dict[str, list[str]] = field(default_factory=dict)


def find_previous(conninfo: str, db: str, filestore: Path) -> Previous:
    """The `<db>_before_<time>` databases and `<folder>.before-<time>` folders restores kept,
    and the `_restore_`/`.restore-` ones a killed restore left. A kept copy is not live: a
    session open on it (a psql left open, a report) does not keep it; a `_restore_` database
    with a session is one a restore is writing now, and it and its folder are left alone."""
    db_pattern = re.compile(rf"{re.escape(kept_base(db))}_(before_{STAMP}|restore_[0-9a-f]{{8}})")
    folder_pattern = re.compile(
        rf"{re.escape(filestore.name)}\.(before-{STAMP}|restore-[0-9a-f]{{8}})"
    )
    with connect(conninfo) as conn:
        names = [str(r[0]) for r in conn.execute("SELECT datname FROM pg_database ORDER BY 1")]
        sessions: dict[str, list[str]] = {}
        for datname, pid, user, app in conn.execute(
            "SELECT datname, pid, usename, application_name FROM pg_stat_activity"
            " WHERE datname IS NOT NULL AND pid <> pg_backend_pid() ORDER BY pid"
        ):
            sessions.setdefault(str(datname), []).append(
                f"pid {pid} of {user}" + (f" ({app})" if app else "")
            )
    ours = [n for n in names if db_pattern.fullmatch(n)]
    in_use = {n: sessions[n] for n in ours if "_restore_" in n and n in sessions}
    databases = [n for n in ours if n not in in_use]
    running = {n.rsplit("_", 1)[1] for n in in_use}
    folders = (
        sorted(
            p for p in filestore.parent.iterdir()
            if folder_pattern.fullmatch(p.name) and p.name.rsplit("-", 1)[1] not in running
        )
        if filestore.parent.is_dir()
        else []
    )  # fmt: skip
    held = {n: sessions[n] for n in databases if n in sessions}
    return Previous(databases, folders, held, in_use)


def leftovers(previous: Previous) -> Previous:
    """Only what killed restores left (`_restore_`, `.restore-`), not the kept copies."""
    return Previous(
        [d for d in previous.databases if "_restore_" in d[-17:]],
        [f for f in previous.folders if ".restore-" in f.name],
        previous.sessions,
        previous.in_use,
    )


def refuse_without_live(conninfo: str, db: str, filestore: Path, previous: Previous) -> None:
    """A kept copy may be all that is left of the live data when the live database or
    folder is missing: then nothing is dropped (a leftover of a killed restore still is,
    with --leftovers)."""
    with connect(conninfo) as conn:
        live = exists(conn, db)[0]
    missing = [f"database {db}"] if not live else []
    if previous.folders and not filestore.is_dir():
        missing.append(str(filestore))
    if missing:
        raise RestoreFailed(
            f"{' and '.join(missing)} does not exist: a kept copy may be all there is of it, "
            "so nothing was dropped; rename a copy back (or restore), or pass --leftovers to "
            "drop only what killed restores left"
        )


def drop_previous(conninfo: str, previous: Previous) -> None:
    with connect(conninfo) as conn:
        for db in previous.databases:
            swap.drop_database(conn, db)
    for folder in previous.folders:
        shutil.rmtree(folder)
    if previous.folders:
        fsync_dir(previous.folders[0].parent)
