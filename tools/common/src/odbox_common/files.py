"""File-system steps every tool's atomic writes share."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
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


class AtomicFile:
    """A file written under a temporary name in its folder, then renamed over `path`: a
    reader sees the old content or the new, never a part (FORMAT.md's "Atomic writes", the
    vault's files, an Odoo zip). Made with O_EXCL and `mode` from the first byte, and the
    mode set again, so the umask cannot loosen a secret's. `temp_name`: how the temporary
    file is named from `path`'s name (each tool's leftovers are found by it)."""

    def __init__(
        self, path: Path, mode: int = 0o600, temp_name: str = "{name}.tmp-{token}"
    ) -> None:
        import secrets

        self.path = path
        self.temp = path.with_name(temp_name.format(name=path.name, token=secrets.token_hex(4)))
        fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)
            self.file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self.temp.unlink(missing_ok=True)
            raise

    def write(self, data: bytes | memoryview) -> None:
        self.file.write(data)

    def finish(self, *, sync: bool = True) -> None:
        """Every byte written (and on disk, with `sync`); the file closed, not yet renamed."""
        if not self.file.closed:
            self.file.flush()
            if sync:
                os.fsync(self.file.fileno())
            self.file.close()

    def commit(self, *, sync: bool = True) -> None:
        """`finish`, then the rename over `path` (made durable, with `sync`)."""
        self.finish(sync=sync)
        self.temp.replace(self.path)
        if sync:
            fsync_dir(self.path.parent)

    def abort(self) -> None:
        """The temporary file goes (before its descriptor, and any lock on it); `path` is as
        it was."""
        self.temp.unlink(missing_ok=True)
        with contextlib.suppress(OSError, ValueError):
            self.file.close()


@contextlib.contextmanager
def atomic_file(
    path: Path, mode: int = 0o600, *, sync: bool = True, temp_name: str = "{name}.tmp-{token}"
) -> Iterator[AtomicFile]:
    """`with atomic_file(path) as f: f.write(...)`: renamed over `path` when the block ends,
    removed if it raises."""
    f = AtomicFile(path, mode, temp_name)
    try:
        yield f
        f.commit(sync=sync)
    except BaseException:
        f.abort()
        raise


def write_private(path: Path, data: bytes) -> None:
    """`data` into `path` atomically (temp file in its folder, fsync, rename, fsync the
    folder), readable by its owner only (0600) from the first byte."""
    with atomic_file(path) as f:
        f.write(data)


def lock_or_refuse(fd: int, held: str, *, shared: bool = False) -> None:
    """flock(2) `fd` now, exclusive (or shared), or raise LockHeldError(`held`): every tool's
    locks say at once that another run holds them, and never wait."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LockHeldError(held) from None
