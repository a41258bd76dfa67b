"""`odbox-backup run`: the database, then the filestore, into objects; the manifest last.

The database is dumped before the filestore is read, so every attachment the
dump references is already on disk when the filestore is read (Odoo writes
the file before it commits the row). The dump streams from `pg_dump -Fc -Z0`
through content-defined chunking into objects: memory holds one chunk at a
time, and unchanged tables give unchanged chunks. A filestore file whose path
and size match the previous snapshot is not read again: Odoo names each file
by the SHA-1 of its content, so the same path means the same bytes.

This module is the run's order; the database half is in dump.py, the filestore half in
filestore.py, what both share in sources.py (their names are importable from here too).
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from odbox_backup.attachments import store_names
from odbox_backup.dump import (
    PUTS_IN_FLIGHT,
    Facts,
    _odoo_facts,
    _unchanged_dump,
    dump_database,
    odoo_version_of,
    pg_version_text,
    store_dump,
)
from odbox_backup.filestore import (
    ODOO_PATH,
    UNSETTLED_NS,
    PathsOf,
    attachments_missing,
    entry_path,
    entry_size,
    filestore_part,
    previous_files,
    read_filestore,
    store_file,
)
from odbox_backup.repository import Repository
from odbox_backup.sources import (
    BackupFailed,
    Counters,
    Source,
    find_pg_tool,
    without_password,
)
from odbox_common.progress import Progress

# What callers (import, restore, k8s-migrate, the tests) import from here, wherever it lives.
__all__ = [
    "ODOO_PATH", "PUTS_IN_FLIGHT", "UNSETTLED_NS", "BackupFailed", "Counters", "Facts",
    "PathsOf", "Source", "_odoo_facts", "_unchanged_dump", "attachments_missing",
    "dump_database", "entry_path", "entry_size", "filestore_part", "find_pg_tool",
    "odoo_version_of", "pg_version_text", "previous_files", "read_filestore", "run_backup",
    "store_dump", "store_file", "without_password",
]  # fmt: skip


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
