"""`stats` (what the snapshots hold and what they cost once deduplicated) and `diff ID1 ID2`.

Sizes: a snapshot's **raw** size is what a restore writes (its dump and its
files); its **stored** size is what its distinct objects take in the
repository (a packed object's zstd frame, an object alone as stored); its
**added** size is what the objects no earlier snapshot names take: what that
snapshot cost, in ID order. The repository's stored total counts every object
that some snapshot names once; `repository_bytes` is every file there (with
unused objects a prune would delete, indexes and manifests).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from odbox_backup.manifests import file_entries, snapshot_time
from odbox_backup.repository import Repository, Unauthenticated

GROWTH_DAYS = 30


@dataclass
class SnapshotStats:
    id: str
    time: str
    database: str
    files: int
    raw_bytes: int
    stored_bytes: int
    added_bytes: int
    objects: int
    added_objects: int
    tags: list[str] = field(default_factory=list)


@dataclass
class Stats:
    snapshots: list[SnapshotStats]
    raw_bytes: int
    stored_bytes: int
    objects: int
    repository_bytes: int
    growth_days: int
    growth_snapshots: int
    growth_bytes: int

    @property
    def ratio(self) -> float:
        """Raw over stored: how many times dedup and compression shrink the snapshots."""
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshots": [asdict(s) for s in self.snapshots],
            "total": {"raw_bytes": self.raw_bytes, "stored_bytes": self.stored_bytes,
                      "objects": self.objects, "ratio": round(self.ratio, 3),
                      "repository_bytes": self.repository_bytes},
            "growth": {"days": self.growth_days, "snapshots": self.growth_snapshots,
                       "added_bytes": self.growth_bytes},
        }  # fmt: skip


def _sizer(repo: Repository) -> Callable[[str], int]:
    alone: dict[str, int] | None = None

    def size(name: str) -> int:
        nonlocal alone
        found = repo.stored_size(name)
        if found is not None:
            return found
        if alone is None:  # versions 1 and 2: no index of objects alone; their stored sizes
            alone = {k.rsplit("/", 1)[1]: n for k, n in repo.store.sizes("objects")}
        return alone.get(name, 0)

    return size


def stats(
    repo: Repository,
    ids: Sequence[str],
    *,
    now: dt.datetime | None = None,
    warn: Callable[[str], None] = lambda _: None,
) -> Stats:
    """Per snapshot and in total, one manifest in memory at a time; memory: the set of the
    names seen so far (what "added" needs)."""
    from odbox_backup.tags import tags_of

    now = now or dt.datetime.now(dt.UTC)
    size = _sizer(repo)
    seen: set[str] = set()
    rows = []
    stored_total = 0
    for snapshot_id in ids:
        try:
            manifest = repo.read_snapshot(snapshot_id)
        except Unauthenticated as e:
            warn(f"left out {e}")
            continue
        names = dict.fromkeys(repo.objects_of(manifest))
        stored = added = added_objects = 0
        for name in names:
            n = size(name)
            stored += n
            if name not in seen:
                seen.add(name)
                added += n
                added_objects += 1
        stored_total += added
        fs = manifest["filestore"]
        rows.append(SnapshotStats(
            snapshot_id, snapshot_time(snapshot_id).isoformat(), manifest["database"]["name"],
            int(fs["count"]), int(manifest["database"]["size"]) + int(fs["bytes"]), stored,
            added, len(names), added_objects, tags_of(manifest),
        ))  # fmt: skip
        del manifest, names
    since = now - dt.timedelta(days=GROWTH_DAYS)
    recent = [r for r in rows if dt.datetime.fromisoformat(r.time) > since]
    return Stats(
        rows, sum(r.raw_bytes for r in rows), stored_total, len(seen),
        sum(n for _, n in repo.store.sizes("")), GROWTH_DAYS, len(recent),
        sum(r.added_bytes for r in recent),
    )  # fmt: skip


# ------------------------------------------------------------------ diff


@dataclass
class FileChange:
    path: str
    size: int
    old_size: int | None = None


@dataclass
class Diff:
    old: str
    new: str
    added: list[FileChange]
    removed: list[FileChange]
    changed: list[FileChange]
    unchanged: int
    dump_reused: bool
    dump_objects_shared: int
    dump_objects_new: int
    dump_bytes_old: int
    dump_bytes_new: int

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.old,
            "to": self.new,
            "files": {
                "added": [{"path": c.path, "size": c.size} for c in self.added],
                "removed": [{"path": c.path, "size": c.size} for c in self.removed],
                "changed": [{"path": c.path, "size": c.size, "old_size": c.old_size}
                            for c in self.changed],
                "unchanged": self.unchanged,
            },
            "dump": {"reused": self.dump_reused, "objects_shared": self.dump_objects_shared,
                     "objects_new": self.dump_objects_new, "bytes_from": self.dump_bytes_old,
                     "bytes_to": self.dump_bytes_new},
        }  # fmt: skip


def diff(repo: Repository, old_id: str, new_id: str) -> Diff:
    """What changed from one snapshot to another: files by path (their content by object
    names: equal names, equal content), and whether the dump is the same objects."""
    old = repo.read_snapshot(old_id)
    before = {e["path"]: (int(e["size"]), tuple(e["objects"])) for e in file_entries(old)}
    old_db = old["database"]
    del old
    new = repo.read_snapshot(new_id)
    added, changed = [], []
    unchanged = 0
    for entry in file_entries(new):
        path, size, objects = entry["path"], int(entry["size"]), tuple(entry["objects"])
        was = before.pop(path, None)
        if was is None:
            added.append(FileChange(path, size))
        elif was[1] != objects:
            changed.append(FileChange(path, size, was[0]))
        else:
            unchanged += 1
    removed = [FileChange(path, size) for path, (size, _) in sorted(before.items())]
    new_db = new["database"]
    old_objects = set(old_db["objects"])
    shared = sum(1 for n in new_db["objects"] if n in old_objects)
    return Diff(
        old_id, new_id, sorted(added, key=lambda c: c.path), removed,
        sorted(changed, key=lambda c: c.path), unchanged,
        list(old_db["objects"]) == list(new_db["objects"]), shared,
        len(new_db["objects"]) - shared, int(old_db["size"]), int(new_db["size"]),
    )  # fmt: skip
