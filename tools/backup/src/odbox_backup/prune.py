"""`odbox-backup prune`: forget snapshots by a retention policy, then delete what nothing uses.

The policy is restic's `forget` policy, rule for rule, so a sysadmin's
`--keep-daily 7 --keep-weekly 4` means here what it means there (restic
0.16 and later, `internal/restic/snapshot_policy.go`):

- Snapshots are taken newest first. Each `--keep-X N` is a bucket with N
  places and a key function (last: every snapshot is its own key; hourly:
  the hour; daily: the day; weekly: the ISO year and week; monthly: the
  month; yearly: the year).
- A snapshot is kept by a bucket when its key differs from the key of the
  previous snapshot that bucket kept and places are left; or when it is the
  oldest snapshot and that bucket still has places left (so a policy not yet
  filled keeps the oldest history). Each bucket it is kept by uses a place.
- A snapshot is kept when any bucket keeps it; the reasons are all of them.

Times are the snapshot IDs' UTC times. Giving no `--keep-*` at all is refused
rather than read as "keep nothing".

Deleting, under the repository's lock: first every manifest of the
snapshots kept is read (if one cannot be, nothing is deleted); then the
forgotten manifests are deleted; then every object no kept snapshot names. A
pack that holds unused objects is rewritten: its used objects go into new packs,
which are flushed to disk before the old pack is deleted. Killed part-way, a
manifest is either there with all its objects or gone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from odbox_backup.repository import Repository, RepositoryError, snapshot_time
from odbox_common.errors import UsageError

KINDS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def _key(kind: str, t: dt.datetime, nr: int) -> int:
    if kind == "last":
        return nr
    if kind == "hourly":
        return ((t.year * 100 + t.month) * 100 + t.day) * 100 + t.hour
    if kind == "daily":
        return (t.year * 100 + t.month) * 100 + t.day
    if kind == "weekly":
        year, week, _ = t.isocalendar()
        return year * 100 + week
    if kind == "monthly":
        return t.year * 100 + t.month
    return t.year


@dataclass(frozen=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self) -> None:
        for kind in KINDS:
            if getattr(self, kind) < 0:
                raise UsageError(f"--keep-{kind} must be 0 or more")

    @property
    def empty(self) -> bool:
        return not any(getattr(self, kind) for kind in KINDS)

    def describe(self) -> str:
        parts = [f"{getattr(self, k)} {k}" for k in KINDS if getattr(self, k)]
        return "keep " + ", ".join(parts) if parts else "keep nothing"


@dataclass
class Decision:
    id: str
    time: dt.datetime
    keep: bool
    reasons: list[str] = field(default_factory=list)


def apply_policy(times: dict[str, dt.datetime], policy: Policy) -> list[Decision]:
    """One decision per snapshot, newest first (restic's forget policy; module docstring)."""
    if policy.empty:
        raise UsageError(
            "give at least one --keep-last/-hourly/-daily/-weekly/-monthly/-yearly: "
            "prune never reads no policy as keep nothing"
        )
    ordered = sorted(times.items(), key=lambda item: (item[1], item[0]), reverse=True)
    left = {kind: getattr(policy, kind) for kind in KINDS}
    last: dict[str, int | None] = dict.fromkeys(KINDS)
    decisions = []
    for nr, (snapshot_id, t) in enumerate(ordered):
        reasons = []
        for kind in KINDS:
            if left[kind] <= 0:
                continue
            key = _key(kind, t, nr)
            if key != last[kind]:
                reasons.append(kind)
            elif nr == len(ordered) - 1:
                reasons.append(f"oldest {kind}")
            else:
                continue
            last[kind] = key
            left[kind] -= 1
        decisions.append(Decision(snapshot_id, t, bool(reasons), reasons))
    return decisions


@dataclass
class PruneResult:
    decisions: list[Decision]
    forgotten: list[str]
    objects_deleted: int
    objects_kept: int
    dry_run: bool
    packs_rewritten: int = 0


def prune(
    repo: Repository,
    policy: Policy,
    *,
    dry_run: bool = False,
    report: Callable[[str], None] = lambda _: None,
) -> PruneResult:
    """Apply `policy` and delete what it forgets (the caller holds the lock)."""
    ids = repo.snapshot_ids()
    decisions = apply_policy({i: snapshot_time(i) for i in ids}, policy)
    kept = [d.id for d in decisions if d.keep]
    forgotten = [d.id for d in decisions if not d.keep]
    manifests: list[dict[str, Any]] = [repo.read_snapshot(i) for i in kept]
    referenced: set[str] = set()
    for manifest in manifests:
        referenced.update(repo.objects_of(manifest))
    unreferenced = sorted(repo.known_objects(with_places=True) - referenced)
    if repo.damaged_indexes:
        raise RepositoryError(
            f"{repo.damaged_indexes[0]} is damaged: a prune would lose the objects of its pack; "
            "nothing was deleted (see `odbox-backup verify`)"
        )
    packs = repo.packs()
    rewrite = sorted(p for p, names in packs.items() if not referenced.issuperset(names))
    alone = [name for name in unreferenced if repo.location(name) is None]
    if dry_run:
        return PruneResult(decisions, forgotten, len(unreferenced), len(referenced), True,
                           len(rewrite))  # fmt: skip
    for snapshot_id in forgotten:
        repo.store.delete(f"snapshots/{snapshot_id}")
    if forgotten:
        report(f"forgot {len(forgotten)} snapshots; deleting {len(unreferenced)} unused objects")
    # A pack with unused objects: its used ones go into new packs, on disk before the old
    # pack is deleted (killed in between, some objects are stored twice until the next prune).
    live = {name for p in rewrite for name in packs[p] if name in referenced}
    repo.repack(sorted(live))
    repo.flush()
    for pack_id in rewrite:
        repo.delete_pack(pack_id)
    for pack_id in repo.orphan_packs:
        repo.store.delete(repo.pack_key(pack_id))
    for name in alone:
        repo.store.delete(repo.object_key(name))
        repo.known_objects().discard(name)
    return PruneResult(decisions, forgotten, len(unreferenced), len(referenced), False,
                       len(rewrite))  # fmt: skip


def explain(decisions: Sequence[Decision]) -> list[list[str]]:
    return [
        [d.id, d.time.isoformat(), "keep" if d.keep else "forget", ", ".join(d.reasons)]
        for d in decisions
    ]
