"""`odbox-backup restore`: into a new database and a new folder, verify, and only then swap.

1. Every object the snapshot names must be in the repository: checked before
   anything is created.
2. The dump streams, object by object (each checked against its name), into a new
   database `<db>_restore_<id>`, loaded in a session of its owner role (never a
   superuser's: a dump from another server is untrusted): a custom dump by
   `pg_restore --single-transaction --no-owner --no-privileges`, a plain SQL one (an
   imported Odoo zip) by odbox_backup.sqlload, never psql. The source's grants are left
   out; the live database's default privileges are copied first, so the box's apply.
   The files go to a new folder next to the live one, given the live folder's owner and
   mode (on a new box, its parent's).
3. Verify: every object's SHA-256 (as it is read), the dump's and every
   file's size, and that every attachment the restored database names
   (`ir_attachment.store_fname`) is in the restored filestore, and that the folder's
   owner can read every file.
4. Only then, with Odoo stopped (the stop command), the live database is
   renamed `<db>_before_<time>` and the live folder `<folder>.before-<time>`,
   and the restored ones take their names. Odoo is started again whatever
   happened (the start command).

A failure before step 4 removes what the restore made and leaves the live
database and filestore untouched. The previous ones are kept until
`odbox-backup drop-previous` removes them.

This module runs the steps in order; each lives in its own: restore_checks (step 1, and
what every step shares), restore_db and restore_files (steps 2 and 3), restore_swap (step
4, with --resume and --undo), previous (the kept copies' names, and drop-previous).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odbox_backup import swap
from odbox_backup.previous import (
    Previous,
    drop_previous,
    find_previous,
    kept_base,
    leftovers,
    previous_names,
    refuse_without_live,
)
from odbox_backup.repository import Repository
from odbox_backup.restore_checks import (
    RestoreFailed,
    Target,
    check_objects,
    connect,
    exists,
    refuse_mount_point,
)
from odbox_backup.restore_db import copy_database_acl, restore_database
from odbox_backup.restore_files import (
    Attachments,
    adopt,
    restore_filestore,
    unreadable,
    verify_attachments,
)
from odbox_backup.restore_swap import resume, run_swap
from odbox_backup.service import OdooService
from odbox_common.console import count_of
from odbox_common.progress import Progress

# The names callers import from here (cli_restore, odoozip, tests), wherever they now live.
__all__ = [
    "Previous",
    "RestoreFailed",
    "Restored",
    "Target",
    "adopt",
    "check_objects",
    "drop_previous",
    "find_previous",
    "leftovers",
    "refuse_without_live",
    "restore",
    "restore_filestore",
    "resume",
    "unreadable",
]


@dataclass
class Restored:
    snapshot: str
    db: str
    filestore: Path
    previous_db: str | None
    previous_filestore: Path | None
    files: int
    bytes: int
    attachments_checked: int
    attachments_missing: int = 0
    attachments_first_missing: str = ""


def _drop(conninfo: str, db: str) -> None:
    """Best effort: the cleanup of a failed restore must not hide why it failed."""
    with contextlib.suppress(Exception), connect(conninfo) as conn:
        swap.drop_database(conn, db)


@contextlib.contextmanager
def _cleanup_on_failure(conninfo: str, db: str, folder: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        _drop(conninfo, db)
        shutil.rmtree(folder, ignore_errors=True)
        raise


def restore(
    repo: Repository,
    snapshot_id: str,
    target: Target,
    service: OdooService,
    progress: Progress | None = None,
    *,
    allow_missing_attachments: bool = False,
    prepare: Callable[[str], None] | None = None,
) -> Restored:
    """Restore `snapshot_id` next to the live database and filestore, verify it, then swap.
    `prepare` (restore --neutralize) runs on the restored database's name before the swap,
    before any Odoo has started on it; when it raises, nothing is swapped.
    A restored database that names attachments the snapshot's filestore lacks stops the
    restore before the swap, unless `allow_missing_attachments`: a snapshot of a box whose
    filestore already lacked them (Odoo shows such an attachment as empty) or where Odoo's
    garbage collector deleted one during the backup is still that box as it was."""
    progress = progress or Progress()
    manifest = repo.read_snapshot(snapshot_id)
    check_objects(repo, manifest)
    short = snapshot_id[-8:]
    new_db = f"{kept_base(target.db)}_restore_{short}"
    new_folder = target.filestore.with_name(f"{target.filestore.name}.restore-{short}")
    refuse_mount_point(target.filestore)
    with swap.restore_lock(target.filestore, "the restore"):
        swap.refuse_if_interrupted(target.filestore, "the restore")
        with connect(target.conninfo) as conn:
            live_exists, live_owner = exists(conn, target.db)
            if exists(conn, new_db)[0] or new_folder.exists():
                # The lock is ours and no journal names them: a restore killed before its
                # swap left them, and this one starts again.
                progress.phase(f"removing {new_db} and {new_folder}: a killed restore left them")
                swap.drop_database(conn, new_db)
                shutil.rmtree(new_folder, ignore_errors=True)
        owner = target.owner or live_owner or "postgres"
        with _cleanup_on_failure(target.conninfo, new_db, new_folder):
            files, size, attachments = _restore_and_verify(
                repo, manifest, target, new_db, new_folder, owner, live_exists, progress,
                allow_missing_attachments=allow_missing_attachments,
            )  # fmt: skip
            if prepare is not None:
                prepare(new_db)
        previous_db, previous_folder = previous_names(target, live_exists)
        kept = str(previous_folder) if previous_folder else None
        plan = swap.Swap(snapshot_id, target.db, new_db, previous_db, str(target.filestore),
                         str(new_folder), kept)  # fmt: skip
        run_swap(plan, target.conninfo, service, progress)
    return Restored(snapshot_id, target.db, target.filestore, previous_db, previous_folder,
                    files, size, attachments.checked, attachments.missing,
                    attachments.first_missing)  # fmt: skip


def _restore_and_verify(
    repo: Repository,
    manifest: dict[str, Any],
    target: Target,
    new_db: str,
    new_folder: Path,
    owner: str,
    live_exists: bool,
    progress: Progress,
    *,
    allow_missing_attachments: bool,
) -> tuple[int, int, Attachments]:
    """Steps 2 and 3: the new database and folder, restored and verified."""
    new_folder.parent.mkdir(parents=True, exist_ok=True)
    progress.phase(
        f"restoring database {manifest['database']['name']} and "
        f"{count_of(manifest['filestore']['count'], 'file')}",
        manifest["database"]["size"] + manifest["filestore"]["bytes"],
    )
    # The files are written while PostgreSQL restores the dump: one waits on the server,
    # the other on the disk, and both finish before anything is verified.
    cancel = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        files_done = pool.submit(restore_filestore, repo, manifest, new_folder, progress,
                                 cancel)  # fmt: skip
        try:
            restore_database(repo, manifest, target, new_db, owner, progress,
                             target.db if live_exists else None)  # fmt: skip
        except BaseException:
            cancel.set()
            raise
        finally:
            wait([files_done])
        files, size = files_done.result()
    if live_exists:
        copy_database_acl(target.conninfo, target.db, new_db)
    adopt(new_folder, target.filestore if target.filestore.exists() else new_folder.parent)
    bad, first_bad = unreadable(new_folder)
    if bad:
        raise RestoreFailed(
            f"the owner of {new_folder} (uid {new_folder.stat().st_uid}) could not read "
            f"{bad} of its files and folders (first: {first_bad}); nothing was swapped"
        )
    attachments = verify_attachments(target.conninfo, new_db, new_folder)
    if attachments.missing:
        lacking = (
            f"the restored database names {count_of(attachments.missing, 'attachment')} the "
            f"snapshot's filestore lacks (first: {attachments.first_missing})"
        )
        if not allow_missing_attachments:
            raise RestoreFailed(
                f"{lacking}; nothing was swapped. If the live filestore lacked them too "
                "when the snapshot was taken, --allow-missing-attachments restores it as it was"
            )
        progress.phase(f"warning: {lacking}; restored as it was (--allow-missing-attachments)")
    progress.phase(
        f"verified: every object's SHA-256, {count_of(files, 'file')}, "
        f"{attachments.checked - attachments.missing} of {attachments.checked} "
        "attachments present"
    )
    return files, size, attachments
