"""`odbox-backup status`: are backups happening? The newest snapshot of each database and its
age, the last result of each command from the cache, and who holds the repository's lock.

Without the identity of an encrypted repository the manifests cannot be read, so the
snapshots cannot be told apart by database: the newest authentic snapshot of all stands
for them (`database` None). With it, each manifest's database name is read once and kept
in the cache (`names-<digest>.json`: a snapshot never changes), so a second `status` reads
no manifest it has seen. `--max-age` makes it a check: exit 3 when a database's newest
snapshot (or the newest of all) is older, or there is none.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odbox_backup import locks
from odbox_backup.manifests import snapshot_time
from odbox_backup.metrics import load_last
from odbox_backup.repository import Repository, Unauthenticated
from odbox_common.errors import UsageError
from odbox_common.files import write_private

DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> dt.timedelta:
    """`26h`, `90m`, `1d12h`, `3600s` (systemd's and restic's spelling of a span)."""
    match = DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise UsageError(f"--max-age takes a span like 26h, 90m or 1d12h, not {text!r}")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def human_age(age: dt.timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes}m"
    hours = minutes // 60
    return f"{hours}h" if hours < 48 else f"{hours // 24}d{hours % 24}h"


@dataclass
class Newest:
    database: str | None  # None: every snapshot (their databases cannot be read)
    snapshot: str
    time: dt.datetime
    age: dt.timedelta


@dataclass
class Status:
    repository: str
    snapshots: int
    newest: list[Newest]
    locks: list[tuple[locks.LockInfo, bool]]  # (lock, stale)
    last: dict[str, dict[str, Any]]
    unauthenticated: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # why backups are too old (--max-age)

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "snapshots": self.snapshots,
            "newest": [
                {
                    "database": n.database,
                    "snapshot": n.snapshot,
                    "time": n.time.isoformat(),
                    "age_seconds": int(n.age.total_seconds()),
                }
                for n in self.newest
            ],
            "locks": [lock.to_json() | {"stale": stale} for lock, stale in self.locks],
            "last": self.last,
            "unauthenticated": self.unauthenticated,
            "stale": self.stale,
            "ok": not self.stale,
        }


def _names_path(cache_dir: Path, repo: Repository) -> Path:
    digest = hashlib.sha256(repo.store.url.encode()).hexdigest()[:16]
    return cache_dir / f"names-{digest}.json"


# A manifest is canonical JSON, keys sorted: `database` comes first and its `name` after
# `format`, before the long `objects` list. So the name is in the first bytes of the stream.
HEAD = re.compile(r'\{"database":\{"format":"[^"\\]*","name":("(?:[^"\\]|\\.)*")')


def database_of(repo: Repository, snapshot_id: str) -> str:
    """A snapshot's database name, from the first 64 KiB of its decompressed manifest (a
    manifest of 200,000 files is tens of MB of JSON: decrypted, never parsed whole); the
    whole manifest only when its head is not as `HEAD` expects."""
    import zstandard

    blob = repo.snapshot_blob(snapshot_id)  # the one `check_snapshot` kept
    try:
        plain = repo.codec.unseal(blob, f"snapshot {snapshot_id}")  # the codec's one way to decrypt
        head = zstandard.ZstdDecompressor().stream_reader(plain).read(64 << 10)
        match = HEAD.match(head.decode(errors="replace"))
    except zstandard.ZstdError:
        match = None
    if match is not None:
        return str(json.loads(match[1]))
    repo._blob = (snapshot_id, blob)  # read_snapshot takes it from there, not the store again
    return str(repo.read_snapshot(snapshot_id)["database"]["name"])


def snapshot_names(
    repo: Repository, cache_dir: Path | None
) -> tuple[dict[str, str | None], list[str]]:
    """Every authentic snapshot's ID → its database's name (None where the manifest cannot
    be read without the identity), and the unauthenticated IDs. What an earlier `status`
    found is kept in the cache and not read again: manifests are never changed, and one
    replaced since would have the same ID and so the same age (the newest of each database
    is checked again by the caller)."""
    readable = not repo.config.encrypted or bool(repo.identities)
    path = _names_path(cache_dir, repo) if cache_dir is not None else None
    known: dict[str, str | None] = {}
    if path is not None:
        try:
            document = json.loads(path.read_text())
            if document.get("repository") == repo.config.id:
                known = {str(k): v for k, v in document["names"].items()
                         if v is not None or not readable}  # fmt: skip
        except (OSError, ValueError, KeyError, AttributeError):
            known = {}
    names: dict[str, str | None] = {}
    unauthenticated = []
    for snapshot_id in repo.snapshot_ids():
        if snapshot_id in known:
            names[snapshot_id] = known[snapshot_id]
            continue
        try:
            repo.check_snapshot(snapshot_id)
            names[snapshot_id] = database_of(repo, snapshot_id) if readable else None
        except Unauthenticated:
            unauthenticated.append(snapshot_id)
        repo._blob = None  # the codec's cache of one manifest: not kept past its use
    if path is not None and names != known:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            body = json.dumps({"repository": repo.config.id, "names": names}).encode()
            write_private(path, body)
        except OSError:
            pass  # the cache only saves work
    return names, unauthenticated


def status(
    repo: Repository,
    cache_dir: Path | None,
    *,
    max_age: dt.timedelta | None = None,
    now: dt.datetime | None = None,
) -> Status:
    now = now or dt.datetime.now(dt.UTC)
    names, unauthenticated = snapshot_names(repo, cache_dir)
    while True:  # the ones that count are authenticated every time, cached or not
        newest: dict[str | None, str] = {}
        for snapshot_id in sorted(names):  # oldest first: the last one of each name stays
            newest[names[snapshot_id]] = snapshot_id
        forged = []
        for snapshot_id in newest.values():
            try:
                repo.snapshot_blob(snapshot_id)
            except Unauthenticated:
                forged.append(snapshot_id)
        if not forged:
            break
        for snapshot_id in forged:
            del names[snapshot_id]
            unauthenticated.append(snapshot_id)
    authentic = list(names)
    rows = [Newest(db, i, snapshot_time(i), now - snapshot_time(i))
            for db, i in sorted(newest.items(), key=lambda item: item[0] or "")]  # fmt: skip
    held = [(lock, locks.is_stale(lock, now)) for lock in locks.read_locks(repo.store)]
    last = load_last(cache_dir, repo.store.url) if cache_dir is not None else {}
    result = Status(repo.store.url, len(authentic), rows, held, last, unauthenticated)
    if max_age is not None:
        if not rows:
            result.stale.append(f"{repo.store.url} holds no snapshot")
        for row in rows:
            if row.age > max_age:
                what = f"of database {row.database}" if row.database else "of all"
                result.stale.append(
                    f"the newest snapshot {what} ({row.snapshot}) is {human_age(row.age)} old, "
                    f"more than {human_age(max_age)}"
                )
    return result
