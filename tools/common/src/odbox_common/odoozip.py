"""The writer of an Odoo backup zip, as Odoo's database manager makes it and restores it:
`dump.sql` (plain SQL), `filestore/` (the database's filestore, same paths) and
`manifest.json`. odbox-backup's `export --odoo-zip` and k8s-migrate's `pull --odoo-zip`
both write through it, so both make the same layout in the same way.

The zip is written to a temporary file next to it (`.NAME.tmp-` and 8 hex digits, 0600:
it is the whole database and every attachment, in clear), held with an exclusive flock
while it is written (a temporary file that can be locked is a killed run's leftover), then
fsynced and renamed: a reader finds the whole zip or none.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from odbox_common.files import AtomicFile, fsync_dir

TEMP_NAME = ".{name}.tmp-{token}"  # how a zip's temporary file is named (`leftovers` finds them)
ZIP64_FROM = 1 << 30  # a file entry this large is written as zip64 (zipfile needs to know first)


def leftover_pattern(out: Path) -> str:
    """The glob of `out`'s temporary files, made by a run of either tool."""
    import glob

    return f".{glob.escape(out.name)}.tmp-*"


class OdooZipWriter:
    """`dump()`, then `file()` for each filestore file, then `commit(manifest)`; `abort()`
    (or an error in between) leaves nothing at `out`. The caller has checked `out`."""

    def __init__(self, out: Path) -> None:
        self.out = out
        for _ in range(5):
            self._file = AtomicFile(out, 0o600, TEMP_NAME)
            fcntl.flock(self._file.file.fileno(), fcntl.LOCK_EX)
            if os.fstat(self._file.file.fileno()).st_nlink:
                break  # else another run took it for a leftover between open and flock
            self._file.file.close()
        self.temp = self._file.temp
        self._zip = zipfile.ZipFile(self._file.file, "w", zipfile.ZIP_DEFLATED, compresslevel=1)

    @contextlib.contextmanager
    def dump(self) -> Iterator[IO[bytes]]:
        """The `dump.sql` entry to write into (zip64: a dump's size is not known first)."""
        with self._zip.open("dump.sql", "w", force_zip64=True) as sink:
            yield sink

    @contextlib.contextmanager
    def file(self, path: str, size: int) -> Iterator[IO[bytes]]:
        """The entry `filestore/PATH` of `size` bytes to write into."""
        info = zipfile.ZipInfo(f"filestore/{path}", time.gmtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        with self._zip.open(info, "w", force_zip64=size > ZIP64_FROM) as sink:
            yield sink

    def commit(self, manifest: dict[str, Any]) -> None:
        """`manifest.json` (Odoo's), then the zip closed, fsynced and renamed into place."""
        try:
            self._zip.writestr("manifest.json", json.dumps(manifest, indent=4))
            self._zip.close()
            self._file.file.flush()
            os.fsync(self._file.file.fileno())
            self.temp.rename(self.out)  # while locked: no other run takes it for a leftover
            self._file.file.close()
            fsync_dir(self.out.parent)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """The temporary file goes (after a commit it has been renamed: nothing to do)."""
        with contextlib.suppress(OSError, ValueError, zipfile.BadZipFile):
            self._zip.close()
        if not self._file.file.closed:  # still ours (locked): it goes before the lock does
            self._file.abort()
