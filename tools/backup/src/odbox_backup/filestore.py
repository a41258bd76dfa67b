"""The filestore half of `odbox-backup run`: each file into objects (small ones packed), the
walk that reads what changed since the last snapshot (Odoo names a file by the SHA-1 of its
content, so the same path and size mean the same bytes), the snapshot's `filestore` part,
and the check that every file `ir_attachment` names is in it."""

from __future__ import annotations

import bisect
import json
import os
import re
import stat
import threading
import time
from collections.abc import Container, Mapping
from pathlib import Path
from typing import IO, Any

from odbox_backup.manifests import ENTRY_START, JSONTexts, entry_text
from odbox_backup.repository import Repository
from odbox_backup.sources import BackupFailed, Counters
from odbox_common.progress import Progress

ODOO_PATH = re.compile(r"[0-9a-f]{2}/[0-9a-f]{40}")
UNSETTLED_NS = 2_000_000_000  # a file modified this recently may still be being written


def store_file(
    repo: Repository, stream: Any, size: int, counters: Counters, progress: Progress
) -> list[str]:
    """A file's bytes into objects: one object up to the chunking maximum (most files),
    else cut like a stream; its object names. Reading fewer bytes than `size` is an error."""
    if size <= int(repo.config.chunking["max"]):
        data = stream.read(size)
        while len(data) < size:
            more = stream.read(size - len(data))
            if not more:
                raise BackupFailed(f"a file ended after {len(data)} of its {size} bytes")
            data += more
        name, new = repo.put_object(data, small_file=True)
        counters.add(len(data), new)
        progress.advance(len(data))
        return [name]
    before = counters.bytes
    names = _store_stream(repo, stream, counters, progress)
    if counters.bytes - before != size:
        raise BackupFailed(f"a file of {size} bytes gave {counters.bytes - before}")
    return names


def _store_local(repo: Repository, path: str, size: int, max_whole: int, counters: Counters,
                 progress: Progress) -> tuple[list[str], int]:  # fmt: skip
    """A local file as it is now: its objects, and the bytes stored (the file may have
    grown since it was listed: the entry records what was read).

    A whole file is one `os.read` of a byte more than listed (a regular file's short read is
    its end), not `open().read()`: that adds an fstat, an isatty, two lseeks and a read for
    the end, each a GIL hand-over while the dump's workers wait for it; at 20,000 files
    that was 160,000 system calls of a full backup."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        before = counters.bytes
        if size > max_whole:
            with open(fd, "rb", closefd=False) as f:
                return _store_stream(repo, f, counters, progress), counters.bytes - before
        data = os.read(fd, size + 1)
        if len(data) != size:  # grown or shrunk since it was listed: read to its end
            parts = [data]
            while more := os.read(fd, max(size, 1 << 16)):
                parts.append(more)
            data = b"".join(parts)
    finally:
        os.close(fd)
    name, new = repo.put_object(data, small_file=True)
    counters.add(len(data), new)
    progress.advance(len(data))
    return [name], len(data)


def _store_stream(
    repo: Repository, stream: IO[bytes], counters: Counters, progress: Progress
) -> list[str]:
    names = []
    for chunk in repo.chunker().cut_stream(stream):
        data = bytes(chunk.data)
        name, new = repo.put_object(data)
        counters.add(len(data), new)
        names.append(name)
        progress.advance(len(data))
    return names


def entry_path(text: str) -> str:
    """The `path` of a `filestore.files` entry given as its JSON text, as `entry_text` writes
    it (path first; a JSON string cannot hold a bare `"`, so the first `,"size":` ends it)."""
    if not text.startswith(ENTRY_START + '"'):
        raise ValueError(f"not an entry of filestore.files: {text[:40]!r}")
    raw = text[len(ENTRY_START) : text.index(',"size":')]
    return str(json.loads(raw)) if "\\" in raw else raw[1:-1]


class PathsOf:
    """The paths of `filestore.files` entries sorted as texts (as `filestore_part` sorts
    them), but those in `but`, as a container: a binary search for the entry's text, where a
    set of the paths (or of their hashes) beside the entries cost 15 MB at 200,000 files."""

    def __init__(self, texts: JSONTexts, *, but: Container[int] = frozenset()) -> None:
        self.texts, self.but = texts, but  # `but`: hashes of paths (read_filestore's unsettled)

    def _index(self, path: str) -> int | None:
        probe = ENTRY_START + json.dumps(path)  # how `entry_text` starts for this path
        i = bisect.bisect_left(self.texts, probe)
        return i if i < len(self.texts) and self.texts[i].startswith(probe + ",") else None

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str) or hash(path) in self.but:
            return False
        return self._index(path) is not None

    def replace(self, text: str) -> bool:
        """Put the entry `text` in place of the one of its path, if there is one. The texts
        stay sorted: two texts differ first inside their paths, which are unique."""
        i = self._index(entry_path(text))
        if i is not None:
            self.texts[i] = text
        return i is not None


def read_filestore(
    repo: Repository,
    root: Path,
    previous: Mapping[int, str],
    counters: Counters,
    progress: Progress,
    cancel: threading.Event | None = None,
    skip: Container[str] = frozenset(),
    unsettled: set[int] | None = None,
    update: PathsOf | None = None,
) -> JSONTexts:
    """Every regular file under `root` but those whose path is in `skip` into objects; their
    entries for the manifest's `filestore.files` as JSON texts, in no particular order.

    `previous` maps the hash of a path to its entry's text in the previous snapshot (a hash,
    not the path: a third of the memory; the entry's own path is compared on a hit): an
    unchanged file's entry is that same string, neither copied nor rebuilt.

    `unsettled` gets the hash of the path of each file that may still have been written
    while it was read (modified in the last UNSETTLED_NS, or read at another size than
    listed): the pass after the dump reads those again. A hash, not the path: a filestore
    copied in just before the run is all unsettled, and 200,000 paths in a set cost 30 MB;
    two paths of one hash only make a file read twice. With `update`, a file read that
    has an entry there replaces it (the pass after the dump: one entry a file, not two)."""
    if not root.is_dir():
        raise BackupFailed(f"the filestore {root} is not a folder")
    files = JSONTexts()
    known = repo.known_objects()
    max_whole = int(repo.config.chunking["max"])
    start = len(str(root)) + 1

    def unreadable(e: OSError) -> None:
        if isinstance(e, FileNotFoundError):
            return  # removed meanwhile
        raise BackupFailed(f"cannot read the filestore's folder {e.filename}: {e.strerror}; "
                           "no snapshot was written")  # fmt: skip

    # Symlinks are followed (a `02/` on another disk is a common way to spread one), each
    # folder once: a loop fails naming it. os.walk reports a folder it cannot list to
    # `unreadable`, which fails the run: a folder is never left out without a word.
    seen: set[tuple[int, int]] = set()
    for folder, dirs, names in os.walk(root, onerror=unreadable, followlinks=True):
        try:
            here = os.stat(folder)  # noqa: PTH116 (strings, as os.walk gives them)
        except OSError as e:
            unreadable(e)
            continue
        if (here.st_dev, here.st_ino) in seen:
            raise BackupFailed(f"the filestore's {folder} is a symlink loop: remove it")
        seen.add((here.st_dev, here.st_ino))
        dirs.sort()
        unchanged = 0  # their bytes, advanced once a folder, not 200,000 calls
        for filename in sorted(names):  # strings, not pathlib: 20,000 files and more
            if cancel is not None and cancel.is_set():
                raise BackupFailed("stopped reading the filestore: the dump failed")
            path = os.path.join(folder, filename)  # noqa: PTH118 (pathlib is the cost here)
            rel = path[start:].replace(os.sep, "/")
            if rel in skip:
                continue
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    st = os.stat(path)  # noqa: PTH116
            except FileNotFoundError:
                if os.path.islink(path):  # noqa: PTH114
                    target = os.readlink(path)  # noqa: PTH115
                    raise BackupFailed(f"the filestore's {path} is a symlink to {target}, "
                                       "which does not exist") from None  # fmt: skip
                continue  # Odoo's garbage collector removed it meanwhile
            except OSError as e:
                raise BackupFailed(f"cannot read {path}: {e.strerror}") from e
            if not stat.S_ISREG(st.st_mode):
                raise BackupFailed(f"the filestore's {path} is not a file nor a folder "
                                   "(a socket, a pipe, a device?): remove it")  # fmt: skip
            text = previous.get(hash(rel))
            if text is not None and ODOO_PATH.fullmatch(rel):
                before = json.loads(text)
                if (
                    before["path"] == rel
                    and before["size"] == st.st_size
                    and all(n in known for n in before["objects"])
                ):
                    counters.objects += len(before["objects"])
                    counters.bytes += st.st_size
                    unchanged += st.st_size
                    files.append(text)
                    continue
            try:
                objects, size = _store_local(repo, path, st.st_size, max_whole, counters,
                                             progress)  # fmt: skip
            except FileNotFoundError:
                continue
            except OSError as e:
                raise BackupFailed(f"cannot read {path}: {e.strerror}") from e
            if unsettled is not None and (
                size != st.st_size or st.st_mtime_ns > time.time_ns() - UNSETTLED_NS
            ):
                unsettled.add(hash(rel))
            text = entry_text(rel, size, objects)
            if update is None or not update.replace(text):
                files.append(text)
        if unchanged:
            progress.advance(unchanged)
    return files


def count_filestore(root: Path, stop: threading.Event) -> int | None:
    """The bytes of the regular files under `root` as a walk that reads none finds them
    (os.scandir, one stat a file, no hashing): the total of the run's progress. Symlinks are
    followed as read_filestore follows them, each folder once; what cannot be listed is left
    out (read_filestore fails the run on it). None when `stop` is set first."""
    size = 0
    seen: set[tuple[int, int]] = set()
    folders = [str(root)]
    while folders:
        if stop.is_set():
            return None
        folder = folders.pop()
        try:
            here = os.stat(folder)  # noqa: PTH116 (strings, as os.scandir takes them)
            if (here.st_dev, here.st_ino) in seen:
                continue
            seen.add((here.st_dev, here.st_ino))
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir():
                        folders.append(entry.path)
                    elif entry.is_file():
                        size += entry.stat().st_size
                except OSError:
                    continue  # removed meanwhile, or a dangling link: read_filestore says
    return size


def entry_size(text: str) -> int:
    """The `size` of an entry given as its JSON text (as `entry_text` writes it)."""
    start = text.index(',"size":') + 8
    return int(text[start : text.index(",", start)])


def filestore_part(files: JSONTexts) -> dict[str, Any]:
    """The manifest's `filestore` part: the entries in path order (sorted as texts, which
    start with the path: no list of keys), their count and bytes."""
    files.sort()
    return {"files": files, "count": len(files), "bytes": sum(map(entry_size, files))}


def previous_files(previous: dict[str, Any] | None) -> dict[int, str]:
    """hash(path) → entry text of the previous snapshot's files (a manifest, or the cache's)."""
    files = (previous or {}).get("filestore", {}).get("files", [])
    if isinstance(files, JSONTexts):
        return {hash(entry_path(text)): text for text in files}
    return {hash(str(f["path"])): entry_text(f["path"], f["size"], f["objects"]) for f in files}


def attachments_missing(conninfo: str, root: Path, files: JSONTexts) -> tuple[int, str]:
    """How many `ir_attachment.store_fname` the database names that the snapshot's files
    (sorted, as `filestore_part` leaves them) lack, and the first. Odoo writes a file before
    it commits its row, so one named now but not read was not in the filestore, unless it
    is on disk now: it came after the last pass, with a row the dump does not hold."""
    import psycopg

    stored = PathsOf(files)
    count, first = 0, ""
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            has = conn.execute("SELECT to_regclass('ir_attachment')").fetchone()
            if not has or not has[0]:
                return 0, ""
            with conn.cursor("attachments") as cursor:  # a batch at a time, never a list
                cursor.itersize = 5000
                cursor.execute("SELECT DISTINCT store_fname FROM ir_attachment"
                               " WHERE store_fname IS NOT NULL AND store_fname <> ''")  # fmt: skip
                for (fname,) in cursor:
                    if fname not in stored and not os.path.isfile(os.path.join(root, fname)):  # noqa: PTH113, PTH118
                        count += 1
                        first = first or str(fname)
    except psycopg.Error as e:
        raise BackupFailed(f"cannot read ir_attachment: {str(e).strip().splitlines()[0]}") from e
    return count, first
