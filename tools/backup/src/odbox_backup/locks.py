"""The repository lock (FORMAT.md, "Locks"): one writer at a time, readers beside writers
but never beside a prune, stale locks recognised.

Three modes, as restic's shared and exclusive locks (where a backup takes a shared one):
`read` (verify, restore, copy's source) goes with anything but a prune; `write` (run,
import, copy's destination: they only add) with readers only; `prune` (which deletes)
with nothing. A reader during a prune would find objects gone that its manifest names."""

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


MODES = ("read", "write", "prune")


def conflicts(mine: str, theirs: str) -> bool:
    """Whether a lock of mode `mine` may not be held beside one of mode `theirs`."""
    if mine == "read":
        return theirs == "prune"
    if mine == "write":
        return theirs != "read"
    return True


@dataclass(frozen=True)
class LockInfo:
    key: str
    host: str
    pid: int
    time: dt.datetime
    command: str
    mode: str = "prune"

    def describe(self) -> str:
        return f"`{self.command}` on {self.host} (pid {self.pid}) since {self.time:%Y-%m-%d %H:%M}Z"

    def to_json(self) -> dict[str, Any]:
        """As `status --json` and `unlock --json` give a lock."""
        return {"host": self.host, "pid": self.pid, "command": self.command, "mode": self.mode,
                "time": self.time.isoformat()}  # fmt: skip


def is_stale(lock: LockInfo, now: dt.datetime | None = None) -> bool:
    now = now or dt.datetime.now(dt.UTC)
    if abs(now - lock.time) > STALE_AFTER:  # a lock dated a day ahead protects nothing either
        return True
    return lock.host == socket.gethostname() and not running(lock.pid)


def read_locks(store: Store) -> list[LockInfo]:
    locks = []
    for key in store.list("locks"):
        try:
            doc: dict[str, Any] = json.loads(store.get(key))
            command = str(doc.get("command", "?"))
            # A lock written before modes existed: a prune's, or a writer's.
            mode = doc.get("mode") or ("prune" if "prune" in command else "write")
            locks.append(
                LockInfo(key, str(doc["host"]), int(doc["pid"]),
                         dt.datetime.fromisoformat(doc["time"]), command,
                         mode if mode in MODES else "prune")
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
    store: Store, command: str, repository_id: str, *, wait: float = 0.0, mode: str = "write"
) -> Iterator[list[LockInfo]]:
    """Hold the repository's lock for a command (`mode`: write, prune or read); yields the
    stale locks it removed.

    A live lock it conflicts with: exit 4 at once, or after `wait` seconds of retrying.
    Once a writer's lock is held, the temp files of killed writes are deleted.
    """
    host, pid = socket.gethostname(), os.getpid()
    key = f"locks/{host}-{pid}-{secrets.token_hex(4)}.json"

    def write() -> None:
        doc = {"host": host, "pid": pid, "command": command, "repository": repository_id,
               "mode": mode,
               "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}  # fmt: skip
        store.put(key, json.dumps(doc).encode())

    deadline = time.monotonic() + wait
    removed: list[LockInfo] = []
    while True:
        write()
        others = [lock for lock in read_locks(store) if lock.key != key]
        stale = [lock for lock in others if is_stale(lock)]
        live = [lock for lock in others if lock not in stale and conflicts(mode, lock.mode)]
        if not live:
            if mode != "read":  # a reader ignores stale locks; the next writer removes them
                for lock in stale:
                    store.delete(lock.key)
                removed += stale
            break
        store.delete(key)
        if time.monotonic() >= deadline:
            what = "nothing was read" if mode == "read" else "nothing was changed"
            raise LockHeldError(
                f"{store.url} is locked by {live[0].describe()}; {what} "
                "(try again later, or pass --wait SECONDS)"
            )
        time.sleep(min(1.0 + secrets.randbelow(1000) / 1000, max(0.1, deadline - time.monotonic())))
    if mode != "read":  # a reader beside a writer must not take its temp files for garbage
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
