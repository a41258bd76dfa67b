"""The repository lock (FORMAT.md, "Locks"): one writer at a time, stale locks recognised."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from odbox_backup.store import TMP_MARK, LocalStore, NotFound, Store
from odbox_common.errors import LockHeldError
from odbox_common.processes import running

STALE_AFTER = dt.timedelta(hours=24)
REFRESH_EVERY = 300.0
# The temp file of a lock being written: locks/<host>-<pid>-<random>.json.tmp-<random>
LOCK_TEMP = re.compile(r"(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}\.json" + re.escape(TMP_MARK) + ".+")


@dataclass(frozen=True)
class LockInfo:
    key: str
    host: str
    pid: int
    time: dt.datetime
    command: str

    def describe(self) -> str:
        return f"`{self.command}` on {self.host} (pid {self.pid}) since {self.time:%Y-%m-%d %H:%M}Z"


def is_stale(lock: LockInfo, now: dt.datetime | None = None) -> bool:
    now = now or dt.datetime.now(dt.UTC)
    if now - lock.time > STALE_AFTER:
        return True
    return lock.host == socket.gethostname() and not running(lock.pid)


def read_locks(store: Store) -> list[LockInfo]:
    locks = []
    for key in store.list("locks"):
        try:
            doc: dict[str, Any] = json.loads(store.get(key))
            locks.append(
                LockInfo(key, str(doc["host"]), int(doc["pid"]),
                         dt.datetime.fromisoformat(doc["time"]), str(doc.get("command", "?")))
            )  # fmt: skip
        except NotFound:
            continue  # released while we looked
        except (ValueError, KeyError, TypeError):
            # A damaged lock (a crash mid-write on a file system without atomic rename):
            # treat it as stale, it protects nothing.
            locks.append(LockInfo(key, "?", 0, dt.datetime.min.replace(tzinfo=dt.UTC), "?"))
    return locks


def remove_leftovers(store: Store) -> list[str]:
    """Delete the temp files killed writes left in a local repository; their paths.

    Called by the lock's holder (FORMAT.md, "Atomic writes"). Every writer of
    objects and snapshots holds the lock (and `init` wrote config.json before
    any), so any temp file outside `locks/` is a leftover. In `locks/` another
    run may be writing its lock file right now (before it finds ours and backs
    off): such a temp file is deleted only when its name's lock would be stale
    (this host and its pid not running), or when it is older than a stale lock.
    """
    if not isinstance(store, LocalStore):
        return []  # an S3 PUT leaves nothing half-written
    removed = []
    now = dt.datetime.now(dt.UTC)
    for path in list(store.temp_files()):
        try:
            rel = path.relative_to(store.root).as_posix()
            if rel.startswith("locks/"):
                age = now - dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
                match = LOCK_TEMP.fullmatch(path.name)
                dead = (
                    match is not None
                    and match["host"] == socket.gethostname()
                    and not running(int(match["pid"]))
                )
                if not dead and age <= STALE_AFTER:
                    continue
            path.unlink()
            removed.append(rel)
        except FileNotFoundError:
            continue  # renamed or removed meanwhile
    return removed


@contextlib.contextmanager
def exclusive(
    store: Store, command: str, repository_id: str, *, wait: float = 0.0
) -> Iterator[list[LockInfo]]:
    """Hold the repository's lock for a writing command; yields the stale locks it removed.

    Another live lock: exit 4 at once, or after `wait` seconds of retrying.
    Once the lock is held, the temp files of killed writes are deleted.
    """
    host, pid = socket.gethostname(), os.getpid()
    key = f"locks/{host}-{pid}-{secrets.token_hex(4)}.json"

    def write() -> None:
        doc = {"host": host, "pid": pid, "command": command, "repository": repository_id,
               "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}  # fmt: skip
        store.put(key, json.dumps(doc).encode())

    deadline = time.monotonic() + wait
    removed: list[LockInfo] = []
    while True:
        write()
        others = [lock for lock in read_locks(store) if lock.key != key]
        stale = [lock for lock in others if is_stale(lock)]
        live = [lock for lock in others if lock not in stale]
        if not live:
            for lock in stale:
                store.delete(lock.key)
            removed += stale
            break
        store.delete(key)
        if time.monotonic() >= deadline:
            raise LockHeldError(
                f"{store.url} is locked by {live[0].describe()}; nothing was changed "
                "(try again later, or pass --wait SECONDS)"
            )
        time.sleep(min(1.0 + secrets.randbelow(1000) / 1000, max(0.1, deadline - time.monotonic())))
    with contextlib.suppress(OSError):
        remove_leftovers(store)  # garbage only: a failure here must not stop the run
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(REFRESH_EVERY):
            with contextlib.suppress(Exception):
                write()

    refresher = threading.Thread(target=refresh, daemon=True)
    refresher.start()
    try:
        yield removed
    finally:
        stop.set()
        refresher.join()
        with contextlib.suppress(Exception):
            store.delete(key)
