"""File-system steps every tool's atomic writes share."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from odbox_common.errors import LockHeldError


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (POSIX needs the folder fsynced too)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Everything written to `path`'s file system on disk: one syncfs(2), where writing many
    files would otherwise cost an fsync each (about 2 ms apiece on a cloud disk). Falls back
    to sync(2) where libc has no syncfs."""
    import ctypes

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = getattr(libc, "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """`data` into `path` atomically (temp file in its folder, fsync, rename, fsync the
    folder), readable by its owner only (0600) from the first byte."""
    import secrets

    tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def lock_or_refuse(fd: int, held: str, *, shared: bool = False) -> None:
    """flock(2) `fd` now, exclusive (or shared), or raise LockHeldError(`held`): every tool's
    locks say at once that another run holds them, and never wait."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LockHeldError(held) from None
