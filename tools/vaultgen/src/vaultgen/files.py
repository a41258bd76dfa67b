"""The one place that writes vault files: staged, fsynced, renamed; plus the vault lock."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from odbox_common.errors import ToolError as VaultError
from odbox_common.files import AtomicFile, lock_or_refuse

TEMP_MARKER = ".vaultgen-tmp-"
SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
DIR_MODE = 0o700


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_or_none(path: Path) -> bytes | None:
    """A vault file's bytes, or None if it does not exist; a symbolic link is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise VaultError(
                f"{path} is a symbolic link: vaultgen does not follow links inside the vault; "
                "replace it by the file"
            ) from e
        raise VaultError(f"cannot read {path}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read()
    except OSError as e:
        raise VaultError(f"cannot read {path}: {e.strerror}") from e


def describe_os_error(e: OSError, path: Path) -> str:
    if e.errno == errno.ENOSPC:
        return f"no space left on the device holding {path}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: {e.strerror} (is the vault folder read-only?)"
    return f"cannot write {path}: {e.strerror or e}"


def ensure_dir(path: Path, mode: int = DIR_MODE) -> None:
    """Create a directory (and parents) with a private mode if it does not exist."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as e:
        raise VaultError(describe_os_error(e, path)) from e


@dataclass
class Transaction:
    """Stage every file first, then rename them all into place.

    If any file cannot be staged (read-only folder, full disk), nothing has
    been replaced yet: the staged temp files are removed and every vault file
    is byte-identical. Each rename is atomic, so a crash during commit leaves
    each file either old or new, never half-written; the next run repairs the
    rest from content, not from file times.
    """

    staged: list[AtomicFile] = field(default_factory=list)

    def stage(self, target: Path, data: bytes, mode: int) -> None:
        ensure_dir(target.parent)
        try:
            staged = AtomicFile(target, mode, "." + "{name}" + TEMP_MARKER + "{token}")
        except OSError as e:
            raise VaultError(describe_os_error(e, target)) from e
        self.staged.append(staged)
        try:
            staged.write(data)
            staged.finish()  # fsynced: the umask never loosened its mode (set again on open)
        except OSError as e:
            raise VaultError(describe_os_error(e, target)) from e

    def commit(self) -> None:
        """Rename in the staged order, making each rename durable before the next, so that
        after a power loss the records (renamed last) never describe files that are not there."""
        try:
            while self.staged:
                item = self.staged[0]
                try:
                    item.commit()
                except OSError as e:
                    raise VaultError(describe_os_error(e, item.path)) from e
                self.staged.pop(0)
        finally:
            self.abort()

    def abort(self) -> None:
        for item in self.staged:
            item.abort()
        self.staged.clear()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_atomic(target: Path, data: bytes, mode: int) -> None:
    with Transaction() as tx:
        tx.stage(target, data, mode)


def remove_stale_temp_files(root: Path) -> None:
    """Remove temp files a killed run left behind (they are never the only copy of anything)."""
    if not root.is_dir():
        return
    for temp in root.rglob(f".*{TEMP_MARKER}*"):
        with contextlib.suppress(OSError):
            temp.unlink()


@contextlib.contextmanager
def exclusive_lock(root: Path) -> Iterator[None]:
    """Hold `root/.lock` while a run may write; exit code 4 if another run holds it.

    flock is released by the kernel when a process dies, so a killed run never
    leaves a stale lock. The lock file's content is never written, so a run with
    nothing to do changes no byte and no mtime. In a folder we cannot write,
    no lock is needed: every write would fail cleanly before replacing anything.
    """
    lock_path = root / ".lock"
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, SECRET_FILE_MODE)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            yield
            return
        raise VaultError(describe_os_error(e, lock_path)) from e
    try:
        lock_or_refuse(fd, f"another vaultgen run is writing {root} (it holds {lock_path}); "
                           "wait for it to finish and run this again")  # fmt: skip
        yield
    finally:
        os.close(fd)


def refuse_if_being_written(root: Path) -> None:
    """Exit code 4 for a reader (status, check) while another run rewrites the vault."""
    try:
        fd = os.open(root / ".lock", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return  # no lock file: nobody has ever written here
    try:
        lock_or_refuse(fd, f"another vaultgen run is writing {root}: run this again when it is "
                           "done", shared=True)  # fmt: skip
    finally:
        os.close(fd)
