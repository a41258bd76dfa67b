"""The database half of `odbox-backup run`: the server's facts (versions, modules, WAL
position), whether the last snapshot's dump can be reused, and `pg_dump -Fc -Z0` streamed
through content-defined chunking into objects (memory holds one chunk at a time, and
unchanged tables give unchanged chunks)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from odbox_backup.repository import Repository
from odbox_backup.sources import BackupFailed, Counters, Source, find_pg_tool, without_password
from odbox_common.progress import Progress

PUTS_IN_FLIGHT = 4
# pg_dump's pipe: Linux's default 64 KiB wakes the reader 16 times a MiB, each a GIL hand-over
# beside the workers; 1 MiB is what /proc/sys/fs/pipe-max-size lets any user ask for.
DUMP_PIPE_BYTES = 1 << 20


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


def dump_pipe() -> tuple[int, int]:
    """A pipe for pg_dump's output, of DUMP_PIPE_BYTES when the kernel allows it (a user
    over pipe-user-pages-soft keeps the default: slower, not wrong)."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, DUMP_PIPE_BYTES)
    return read_end, write_end


def dump_database(
    repo: Repository, source: Source, counters: Counters, progress: Progress
) -> dict[str, Any]:
    """Stream `pg_dump -Fc -Z0` into objects; the manifest's `database` part."""
    pg_dump = find_pg_tool("pg_dump", source.pg_bin)
    conninfo, password = without_password(source.conninfo)
    read_end, write_end = dump_pipe()
    try:
        child = subprocess.Popen(
            [pg_dump, "--format=custom", "--compress=0", f"--dbname={conninfo}"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=os.environ | password,
        )
    except OSError as e:
        os.close(read_end)
        raise BackupFailed(f"cannot run {pg_dump}: {e.strerror}") from e
    finally:
        os.close(write_end)  # pg_dump's now: its exit is the stream's end
    assert child.stderr is not None
    with open(read_end, "rb") as stdout:
        try:
            stored = store_dump(repo, stdout, counters, progress)
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
    its `size` and `objects` for the manifest's `database` part. No SHA-256 of the whole:
    each object's name is its content's, checked on every read, and the manifest's MAC
    covers their list, so a second hash of every byte (0.6 of a full backup's 8.6 CPU s at
    the bench's size) would check nothing more (FORMAT.md, `database`).

    Chunks are compressed, encrypted and written by two workers while the next ones
    are cut (hashlib and zstd release the GIL); at most PUTS_IN_FLIGHT wait in memory."""
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
                size += len(data)
                in_flight.append((len(data), puts.submit(repo.put_object, data)))
                del data
                settle(PUTS_IN_FLIGHT)
            settle(0)
        except BaseException:
            for _, future in in_flight:
                future.cancel()
            raise
    return {"size": size, "objects": names}
