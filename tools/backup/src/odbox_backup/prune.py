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
rather than read as "keep nothing". As restic's `--group-by host,paths` (its
default), the policy applies to each group of snapshots on its own: by default
those of one host and one database (`--group-by host,db`), so on a repository
shared by two databases `--keep-last 2` keeps two of each. A manifest that is
not authenticated is no snapshot: it takes no place, keeps nothing, and is left
for `verify` to name.

Deleting, under the repository's lock: first every manifest of the
snapshots kept is read (if one cannot be, nothing is deleted); then the
forgotten manifests are deleted; then every object no kept snapshot names. A
pack that holds unused objects is rewritten: its used objects go into new packs,
which are flushed to disk before the old pack is deleted. Killed part-way, a
manifest is either there with all its objects or gone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from odbox_backup.repository import Repository, RepositoryError, Unauthenticated, snapshot_time
from odbox_backup.tags import tags_of
from odbox_common.errors import UsageError

KINDS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
GROUP_FIELDS = ("host", "db")


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
    tags: tuple[tuple[str, ...], ...] = ()  # --keep-tag: restic's tag lists (all of one list)

    def __post_init__(self) -> None:
        for kind in KINDS:
            if getattr(self, kind) < 0:
                raise UsageError(f"--keep-{kind} must be 0 or more")

    @property
    def empty(self) -> bool:
        return not any(getattr(self, kind) for kind in KINDS) and not self.tags

    def describe(self) -> str:
        parts = [f"{getattr(self, k)} {k}" for k in KINDS if getattr(self, k)]
        parts += [f"tag {','.join(t)}" for t in self.tags]
        return "keep " + ", ".join(parts) if parts else "keep nothing"


@dataclass
class Decision:
    id: str
    time: dt.datetime
    keep: bool
    reasons: list[str] = field(default_factory=list)
    group: str = ""


def parse_group_by(text: str) -> tuple[str, ...]:
    """`--group-by`: a comma-separated subset of host and db, or "" for one group."""
    fields = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in fields if f not in GROUP_FIELDS]
    if bad:
        raise UsageError(f"--group-by takes host, db or both (comma-separated), not {bad[0]!r}")
    return fields


def group_of(manifest: dict[str, Any], group_by: Sequence[str]) -> str:
    values = {"host": str(manifest.get("host", "?")),
              "db": str(manifest.get("database", {}).get("name", "?"))}  # fmt: skip
    return " ".join(f"{f}={values[f]}" for f in group_by)


def apply_grouped(
    times: dict[str, dt.datetime],
    groups: dict[str, str],
    policy: Policy,
    tags: Mapping[str, Sequence[str]] | None = None,
) -> list[Decision]:
    """`apply_policy` to each group on its own; every decision, newest first."""
    members: dict[str, dict[str, dt.datetime]] = {}
    for snapshot_id, t in times.items():
        members.setdefault(groups.get(snapshot_id, ""), {})[snapshot_id] = t
    decisions = []
    for group, group_times in members.items():
        for decision in apply_policy(group_times, policy, tags):
            decision.group = group
            decisions.append(decision)
    return sorted(decisions, key=lambda d: (d.time, d.id), reverse=True)


def apply_policy(
    times: dict[str, dt.datetime], policy: Policy, tags: Mapping[str, Sequence[str]] | None = None
) -> list[Decision]:
    """One decision per snapshot, newest first (restic's forget policy; module docstring).
    `tags`: each snapshot's, for `policy.tags`."""
    if policy.empty:
        raise UsageError(
            "give at least one --keep-last/-hourly/-daily/-weekly/-monthly/-yearly/-tag: "
            "prune never reads no policy as keep nothing"
        )
    ordered = sorted(times.items(), key=lambda item: (item[1], item[0]), reverse=True)
    left = {kind: getattr(policy, kind) for kind in KINDS}
    last: dict[str, int | None] = dict.fromkeys(KINDS)
    decisions = []
    for nr, (snapshot_id, t) in enumerate(ordered):
        have = set((tags or {}).get(snapshot_id, ()))
        # Tags take no place in any bucket (restic's "has tags").
        reasons = [f"tag {','.join(wanted)}" for wanted in policy.tags if have.issuperset(wanted)]
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
    unauthenticated: list[str] = field(default_factory=list)


def prune(
    repo: Repository,
    policy: Policy,
    *,
    dry_run: bool = False,
    report: Callable[[str], None] = lambda _: None,
    group_by: Sequence[str] = GROUP_FIELDS,
) -> PruneResult:
    """Apply `policy` to each group and delete what it forgets (the caller holds the lock)."""
    if policy.empty:
        apply_policy({}, policy)  # the same refusal, before any manifest is read
    repo.require_writable()
    groups: dict[str, str] = {}
    tags: dict[str, list[str]] = {}
    unauthenticated: list[str] = []
    for snapshot_id in repo.snapshot_ids():
        try:
            manifest = repo.read_snapshot(snapshot_id, future_ok=True)
        except Unauthenticated as e:
            unauthenticated.append(snapshot_id)
            report(f"left out {e}")
            continue
        groups[snapshot_id] = group_of(manifest, group_by)
        tags[snapshot_id] = tags_of(manifest)
        del manifest
    decisions = apply_grouped({i: snapshot_time(i) for i in groups}, groups, policy, tags)
    kept = [d.id for d in decisions if d.keep]
    forgotten = [d.id for d in decisions if not d.keep]
    referenced: set[str] = set()
    for snapshot_id in kept:  # one manifest in memory at a time
        referenced.update(repo.objects_of(repo.read_snapshot(snapshot_id, future_ok=True)))
    known = repo.known_objects(with_places=True)
    unreferenced = sorted((known | repo.unindexed) - referenced)
    if repo.damaged_indexes:
        key = repo.damaged_indexes[0]
        raise RepositoryError(
            f"{repo.index_problems.get(key, f'{key} is damaged')}: a prune would lose the "
            "objects of its pack; nothing was deleted (see `odbox-backup verify`; delete an "
            "index it calls forged by hand)"
        )
    packs = repo.packs()
    rewrite = sorted(p for p, names in packs.items() if not referenced.issuperset(names))
    alone = [name for name in unreferenced if repo.location(name) is None]
    if dry_run:
        return PruneResult(decisions, forgotten, len(unreferenced), len(referenced), True,
                           len(rewrite), unauthenticated)  # fmt: skip
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
    for pack_id in repo.missing_packs:  # an index of a pack that is gone names nothing stored
        repo.store.delete(repo.index_key(pack_id))
    if alone and repo.auth is not None:
        # The indexes of objects stored alone name those about to go: first one new index
        # of those that stay, on disk, then the old indexes go, then the objects (killed at
        # any point, every index names only objects that are there).
        old = list(repo.object_indexes)
        known = repo.known_objects()
        left = [(n, size) for n in sorted(referenced) if n in known and repo.location(n) is None
                and (size := repo.alone_size(n)) is not None]  # fmt: skip
        if left:
            repo.write_objects_index(left)
        repo.flush()
        for key in old:
            repo.store.delete(key)
            repo.object_indexes.remove(key)
    for name in alone:
        repo.store.delete(repo.object_key(name))
        repo.known_objects().discard(name)
    return PruneResult(decisions, forgotten, len(unreferenced), len(referenced), False,
                       len(rewrite), unauthenticated)  # fmt: skip


def explain(decisions: Sequence[Decision]) -> list[list[str]]:
    return [
        [d.id, d.time.isoformat(), d.group, "keep" if d.keep else "forget", ", ".join(d.reasons)]
        for d in decisions
    ]
