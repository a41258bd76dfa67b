"""`odbox-backup run`: the database, then the filestore, into objects; the manifest last.

The database is dumped before the filestore is read, so every attachment the
dump references is already on disk when the filestore is read (Odoo writes
the file before it commits the row). The dump streams from `pg_dump -Fc -Z0`
through content-defined chunking into objects: memory holds one chunk at a
time, and unchanged tables give unchanged chunks. A filestore file whose path
and size match the previous snapshot is not read again: Odoo names each file
by the SHA-1 of its content, so the same path means the same bytes.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections import deque
from collections.abc import Container, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from odbox_backup.attachments import store_names
from odbox_backup.manifests import ENTRY_START, JSONTexts, entry_text
from odbox_backup.repository import Repository
from odbox_common.errors import ToolError
from odbox_common.progress import Progress

ODOO_PATH = re.compile(r"[0-9a-f]{2}/[0-9a-f]{40}")
PUTS_IN_FLIGHT = 4
UNSETTLED_NS = 2_000_000_000  # a file modified this recently may still be being written


class BackupFailed(ToolError):
    """The run could not complete; no snapshot was written."""


@dataclass
class Counters:
    objects: int = 0
    new_objects: int = 0
    bytes: int = 0
    new_bytes: int = 0

    def totals(self, started: float) -> dict[str, Any]:
        """The manifest's `totals`, `started` being the run's time.monotonic() at its start."""
        return {"bytes": self.bytes, "objects": self.objects, "new_objects": self.new_objects,
                "new_bytes": self.new_bytes,
                "seconds": round(time.monotonic() - started, 3)}  # fmt: skip

    def merge(self, other: Counters) -> None:
        self.objects += other.objects
        self.bytes += other.bytes
        self.new_objects += other.new_objects
        self.new_bytes += other.new_bytes

    def add(self, size: int, new: bool) -> None:
        self.objects += 1
        self.bytes += size
        if new:
            self.new_objects += 1
            self.new_bytes += size


@dataclass
class Source:
    """What to back up: a database (libpq connection) and its filestore folder."""

    conninfo: str
    dbname: str
    filestore: Path
    pg_bin: Path | None = None
    mode: str = "hot"


def find_pg_tool(name: str, pg_bin: Path | None = None) -> str:
    """pg_dump/pg_restore/psql: --pg-bin, else PATH, else Debian's newest versioned folder."""
    if pg_bin is not None:
        return str(pg_bin / name)
    found = shutil.which(name)
    if found:
        return found
    versioned = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                       key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                       else 0)  # fmt: skip
    if versioned:
        return str(versioned[-1])
    raise BackupFailed(f"{name} was not found: install the PostgreSQL client, or pass --pg-bin")


def without_password(conninfo: str, **changes: str) -> tuple[str, dict[str, str]]:
    """`conninfo` (with `changes`) for a child's argv, and the environment that carries its
    password (PGPASSWORD): /proc/PID/cmdline is readable by every user of the box."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items()} | changes
    password = params.pop("password", None)
    return make_conninfo(**params), ({"PGPASSWORD": password} if password else {})


@dataclass
class Facts:
    pg_version: str
    modules: dict[str, str]
    odoo_version: str | None
    # Where the server's WAL was before the dump, and which cluster: equal on the next run,
    # nothing was committed meanwhile (None when that cannot be told: a standby, unlogged
    # tables, which change without WAL).
    wal: dict[str, str] | None


def _wal_position(conn: Any) -> dict[str, str] | None:
    import psycopg

    try:
        row = conn.execute(
            "SELECT pg_current_wal_lsn()::text, (SELECT system_identifier::text"
            " FROM pg_control_system()), EXISTS (SELECT FROM pg_class"
            " WHERE relpersistence = 'u') WHERE NOT pg_is_in_recovery()"
        ).fetchone()
    except psycopg.Error:
        return None  # functions a hardened server keeps from this role: just no shortcut
    if row is None or row[2]:
        return None
    return {"lsn": str(row[0]), "system": str(row[1])}


def pg_version_text(server_version_num: int) -> str:
    """`150018` (libpq's server_version, SHOW server_version_num) as `15.18`."""
    return f"{server_version_num // 10000}.{server_version_num % 10000}"


def odoo_version_of(modules: dict[str, str]) -> str | None:
    """Odoo's series (`17.0`) from base's latest_version (`17.0.1.3`), if it says."""
    base = modules.get("base", "")
    return ".".join(base.split(".")[:2]) if base.count(".") >= 2 else None


def _odoo_facts(conninfo: str) -> Facts:
    """The server version, installed modules with their latest_version, Odoo's version, WAL."""
    import psycopg

    try:
        with psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as conn:
            version = conn.info.server_version
            pg_version = pg_version_text(version)
            wal = _wal_position(conn)
            modules: dict[str, str] = {}
            has_modules = conn.execute("SELECT to_regclass('ir_module_module')").fetchone()
            if has_modules and has_modules[0]:
                modules = {
                    str(name): str(latest or "")
                    for name, latest in conn.execute(
                        "SELECT name, latest_version FROM ir_module_module"
                        " WHERE state = 'installed' ORDER BY name"
                    )
                }
    except psycopg.Error as e:
        raise BackupFailed(f"cannot read the database: {str(e).strip().splitlines()[0]}") from e
    return Facts(pg_version, modules, odoo_version_of(modules), wal)


def _unchanged_dump(
    repo: Repository, source: Source, facts: Facts, previous: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The previous snapshot's dump, when nothing was committed since it was taken: same
    cluster, same WAL position, same database and server, and every object still stored."""
    before = (previous or {}).get("database") or {}
    if (
        facts.wal is None
        or before.get("wal") != facts.wal
        or before.get("name") != source.dbname
        or before.get("pg_version") != facts.pg_version
        or before.get("format") != "pg_dump-custom"
    ):
        return None
    known = repo.known_objects()
    if not all(name in known for name in before.get("objects", [])):
        return None
    return dict(before)


def dump_database(
    repo: Repository, source: Source, counters: Counters, progress: Progress
) -> dict[str, Any]:
    """Stream `pg_dump -Fc -Z0` into objects; the manifest's `database` part."""
    pg_dump = find_pg_tool("pg_dump", source.pg_bin)
    conninfo, password = without_password(source.conninfo)
    try:
        child = subprocess.Popen(
            [pg_dump, "--format=custom", "--compress=0", f"--dbname={conninfo}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=os.environ | password,
        )
    except OSError as e:
        raise BackupFailed(f"cannot run {pg_dump}: {e.strerror}") from e
    assert child.stdout is not None and child.stderr is not None
    try:
        stored = store_dump(repo, child.stdout, counters, progress)
    except BaseException:
        child.kill()  # it may be blocked on a full pipe: never wait for it first
        child.wait()
        raise
    stderr = child.stderr.read().decode(errors="replace")
    status = child.wait()
    if status != 0:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        reason = lines[-1].removeprefix("pg_dump: error: ") if lines else f"exit status {status}"
        raise BackupFailed(f"pg_dump of {source.dbname} failed: {reason}; no snapshot was written")
    return {"format": "pg_dump-custom", **stored}


def store_dump(
    repo: Repository, stream: Any, counters: Counters, progress: Progress
) -> dict[str, Any]:
    """A dump stream cut into objects (content-defined, so unchanged tables dedup);
    its `size`, `sha256` and `objects` for the manifest's `database` part.

    Chunks are compressed, encrypted and written by two workers while the next ones
    are cut (hashlib and zstd release the GIL); at most PUTS_IN_FLIGHT wait in memory."""
    whole = hashlib.sha256()
    size = 0
    names: list[str] = []
    in_flight: deque[tuple[int, Future[tuple[str, bool]]]] = deque()

    def settle(keep: int) -> None:
        while len(in_flight) > keep:
            length, future = in_flight.popleft()
            name, new = future.result()
            counters.add(length, new)
            names.append(name)
            progress.advance(length)

    with ThreadPoolExecutor(2, thread_name_prefix="put") as puts:
        try:
            for chunk in repo.chunker().cut_stream(stream):
                data = bytes(chunk.data)
                whole.update(data)
                size += len(data)
                in_flight.append((len(data), puts.submit(repo.put_object, data)))
                del data
                settle(PUTS_IN_FLIGHT)
            settle(0)
        except BaseException:
            for _, future in in_flight:
                future.cancel()
            raise
    return {"size": size, "sha256": whole.hexdigest(), "objects": names}


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


def _store_local(repo: Repository, f: IO[bytes], size: int, max_whole: int, counters: Counters,
                 progress: Progress) -> tuple[list[str], int]:  # fmt: skip
    """A local file as it is now: its objects, and the bytes stored (the file may have
    grown since it was listed: the entry records what was read)."""
    before = counters.bytes
    if size > max_whole:
        return _store_stream(repo, f, counters, progress), counters.bytes - before
    data = f.read()
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
                    progress.advance(st.st_size)
                    files.append(text)
                    continue
            try:
                with open(path, "rb") as f:
                    objects, size = _store_local(repo, f, st.st_size, max_whole, counters,
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
    return files


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


def run_backup(
    repo: Repository,
    source: Source,
    *,
    progress: Progress | None = None,
    previous: dict[str, Any] | None = None,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    """Make one snapshot (the caller holds the lock); its manifest."""
    progress = progress or Progress()
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC)
    counters = Counters()
    facts = _odoo_facts(source.conninfo)
    database = _unchanged_dump(repo, source, facts, previous)
    if database is not None:
        progress.phase(
            f"database {source.dbname} unchanged since snapshot {previous and previous['id']} "
            "(same WAL position): its dump is reused"
        )
        counters.objects += len(database["objects"])
        counters.bytes += int(database["size"])
    before = previous_files(previous)
    early_counters = Counters()
    cancel = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        # The files there now are read while the database is dumped (Odoo never changes a
        # file: its name is its content's hash); the pass after the dump adds those that
        # appeared meanwhile, so every attachment the dump names is in the snapshot.
        progress.phase(
            f"dumping database {source.dbname} and reading filestore {source.filestore}"
            if database is None
            else f"reading filestore {source.filestore}"
        )
        unsettled: set[int] = set()
        early = pool.submit(read_filestore, repo, source.filestore, before, early_counters,
                            progress, cancel, frozenset(), unsettled)  # fmt: skip
        try:
            if database is None:
                dumped = dump_database(repo, source, counters, progress)
                database = {"name": source.dbname, "pg_version": facts.pg_version,
                            "wal": facts.wal, **dumped}  # fmt: skip
        except BaseException:
            cancel.set()
            raise
        finally:
            wait([early])
        first = early.result()
    del before, previous  # the entries still needed are in `first`
    progress.phase("reading what the filestore gained during the dump")
    first.sort()
    # A file read again replaces what the first pass read of it, in place (its bytes then
    # counted twice in `totals.bytes`, which is about this run's reading, not the snapshot).
    read = PathsOf(first, but=unsettled)
    first += read_filestore(repo, source.filestore, {}, counters, Progress(), skip=read,
                            update=read)  # fmt: skip
    del read, unsettled  # nothing per file beyond the entries while the manifest is written
    counters.merge(early_counters)
    filestore = filestore_part(first)
    missing = attachments_missing(source.conninfo, source.filestore, filestore["files"])
    filestore["missing"] = missing[0]
    if missing[0]:
        filestore["missing_first"] = missing[1]
    filestore["names"] = store_names(repo, source.conninfo)  # for `ls` (attachments.py)
    manifest = {
        "version": 1,
        "id": repo.next_snapshot_id(),
        "time": now.isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "mode": source.mode,
        "source": "run",
        "tags": tags or [],
        "database": database,
        "odoo": {"version": facts.odoo_version, "modules": facts.modules},
        "filestore": filestore,
        "totals": counters.totals(started),
    }
    progress.phase("writing the snapshot manifest")
    repo.write_snapshot(manifest)
    return manifest
