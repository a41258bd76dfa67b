"""What every step of `odbox-backup restore` shares, and the checks made before anything
is created: its error, its target, the maintenance connection, that every object the
snapshot names is in the repository, and that the filestore can be swapped by rename."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odbox_backup.repository import Repository
from odbox_common.console import count_of
from odbox_common.errors import ToolError


class RestoreFailed(ToolError):
    """The restore stopped; the live database and filestore are as they were."""


@dataclass(frozen=True)
class Target:
    conninfo: str  # the maintenance connection (a superuser), e.g. to `postgres`
    db: str
    filestore: Path
    owner: str | None = None
    pg_bin: Path | None = None


def connect(conninfo: str, dbname: str | None = None) -> Any:
    import psycopg
    from psycopg.conninfo import make_conninfo

    info = make_conninfo(conninfo, dbname=dbname) if dbname else conninfo
    try:
        return psycopg.connect(info, autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        raise RestoreFailed(
            f"cannot connect to PostgreSQL: {str(e).strip().splitlines()[0]}"
        ) from e


def exists(conn: Any, db: str) -> tuple[bool, str | None]:
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [db]
    ).fetchone()
    return (row is not None, str(row[0]) if row else None)


def check_objects(repo: Repository, manifest: dict[str, Any]) -> None:
    known = repo.known_objects(with_places=True)
    missing = [n for n in repo.objects_of(manifest) if n not in known]
    if missing:
        raise RestoreFailed(
            f"snapshot {manifest['id']} names {count_of(len(missing), 'object')} missing from "
            f"{repo.store.url} (first: {missing[0][:12]}…); nothing was changed"
        )


def refuse_mount_point(filestore: Path) -> None:
    """A filestore that is a mount point cannot be swapped by rename (EBUSY), and a folder
    next to it is on the parent's file system: refused before anything is written."""
    if filestore.is_dir() and os.path.ismount(filestore):
        raise RestoreFailed(
            f"{filestore} is a mount point: a restore writes a new folder next to it and swaps "
            "the two by rename, which a mount point refuses; mount the disk on the folder that "
            f"holds it ({filestore.parent}) instead; nothing was changed"
        )
