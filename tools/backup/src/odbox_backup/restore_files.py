"""Step 2 of a restore, the filestore part, and step 3's checks of it: the files written
into a new folder (each checked against its size), given the live folder's owner and mode,
readable by that owner, and every attachment the restored database names present."""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odbox_backup.repository import CorruptObject, Repository
from odbox_backup.restore_checks import RestoreFailed, connect
from odbox_common.files import fsync_dir, sync_filesystem
from odbox_common.progress import Progress


def restore_filestore(
    repo: Repository,
    manifest: dict[str, Any],
    folder: Path,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,  # set when the database part failed
) -> tuple[int, int]:
    try:
        return _write_files(repo, manifest, folder, progress, cancel)
    except OSError as e:
        where = e.filename or folder
        full = f"; the disk under {folder.parent} is full" if e.errno == errno.ENOSPC else ""
        raise RestoreFailed(f"cannot write {where}: {e.strerror}{full}; nothing was swapped") from e


def _write_files(
    repo: Repository,
    manifest: dict[str, Any],
    folder: Path,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> tuple[int, int]:
    folder.mkdir(mode=0o750)
    count = total = 0
    # Plain strings, not Path: pathlib interns every part of every path it parses, and the
    # table of interned strings grew by megabytes over 200,000 file names.
    root, made = str(folder), {str(folder)}
    for entry in repo.files_in_read_order(manifest):
        if cancel is not None and cancel.is_set():
            raise RestoreFailed("the restore of the database failed; the files were not finished")
        rel = entry["path"]
        if rel.startswith("/") or ".." in rel.split("/"):
            raise CorruptObject(f"snapshot {manifest['id']} names a file outside the filestore")
        path = os.path.join(root, rel)  # noqa: PTH118
        parent = os.path.dirname(path)  # noqa: PTH120
        if parent not in made:  # a folder per 2 hex digits in Odoo's filestore: 256 of them
            os.makedirs(parent, exist_ok=True)  # noqa: PTH103
            made.add(parent)
        size = 0
        with open(path, "wb") as f:
            for name in entry["objects"]:
                data = repo.get_object(name)
                f.write(data)
                size += len(data)
                if progress:
                    progress.advance(len(data))
        if size != entry["size"]:
            raise CorruptObject(f"{entry['path']} came back with {size} bytes, not {entry['size']}")
        count += 1
        total += size
    sync_filesystem(folder)
    fsync_dir(folder.parent)
    return count, total


def adopt(folder: Path, like: Path) -> None:
    """Give the restored folder `like`'s owner, group and mode: `like` is the live folder, or,
    on a new box with no live folder yet, its parent (the odoo user's data folder), so Odoo
    can read and write its filestore after the swap. Folders take `like`'s mode, files the
    same without x; the owner always keeps read and write (and x on folders). Owners change
    only when run as root; modes always.

    Through file descriptors, bottom up, never following a symlink: the parent is the odoo
    user's, who could put a symlink to /etc where the folder was; fwalk holds the folder it
    opened, and each folder is handed over only once everything in it was."""
    import stat

    st = like.stat()
    chown = os.geteuid() == 0 and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid())
    dir_mode = (st.st_mode & 0o2777) | 0o700
    file_mode = (st.st_mode & 0o666) | 0o600
    top = None
    for _, _, files, fd in os.fwalk(folder, topdown=False):
        for name in files:
            entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(entry.st_mode):
                continue  # a restore writes regular files only
            if chown:
                os.chown(name, st.st_uid, st.st_gid, dir_fd=fd, follow_symlinks=False)
            os.chmod(name, file_mode, dir_fd=fd)  # a regular file, in a folder not yet handed over
        if chown:
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, dir_mode)
        top = fd
    if top is None:
        raise RestoreFailed(f"{folder} is not the folder the restore made; nothing was swapped")


def unreadable(folder: Path) -> tuple[int, str]:
    """How many files and folders under `folder` (itself included) its owner could not use
    as Odoo does (read a file; list, enter and add to a folder), and the first of them.
    Decided from the owner's uid and groups and each entry's mode bits, as the kernel
    decides (ACLs aside): it is what a restore run as root cannot see by trying."""
    import pwd
    import stat

    owner = folder.stat()
    if owner.st_uid == 0:
        return 0, ""
    try:
        user = pwd.getpwuid(owner.st_uid)
        groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    except KeyError:
        groups = {owner.st_gid}

    def may(st: os.stat_result, need: int) -> bool:  # need: 4 read, 2 write, 1 enter
        if st.st_uid == owner.st_uid:
            bits = st.st_mode >> 6
        elif st.st_gid in groups:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        return bits & need == need

    count, first = 0, ""
    for parent, _, files in os.walk(folder):
        if not may(os.lstat(parent), 7):
            count, first = count + 1, first or parent
        for name in files:
            path = os.path.join(parent, name)  # noqa: PTH118
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or not may(st, 4):
                count, first = count + 1, first or path
    return count, first


@dataclass
class Attachments:
    checked: int
    missing: int = 0
    first_missing: str = ""


def verify_attachments(conninfo: str, db: str, folder: Path) -> Attachments:
    """How many store_fname the restored database names, and how many of them are not a file
    in the restored folder."""
    count, missing, first = 0, 0, ""
    with connect(conninfo, db) as conn:
        has = conn.execute("SELECT to_regclass('ir_attachment')").fetchone()
        if not has or not has[0]:
            return Attachments(0)
        # A server-side cursor, a batch at a time: a list of every name (200,000 on a big
        # box) came on top of the manifest and the object places, and set the peak memory.
        with conn.transaction(), conn.cursor("attachments") as cursor:
            cursor.itersize = 5000
            cursor.execute(
                "SELECT DISTINCT store_fname FROM ir_attachment WHERE store_fname IS NOT NULL"
            )
            for (fname,) in cursor:
                count += 1
                if not os.path.isfile(os.path.join(folder, fname)):  # noqa: PTH113, PTH118
                    missing += 1
                    first = first or str(fname)
    return Attachments(count, missing, first)
