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
- `--keep-within D` keeps every snapshot newer than D before the newest one
  (not counting those dated after now); `--keep-within-X D` keeps, among
  those, the newest of each X (hour, day, …): a bucket without places, and
  without the oldest rule. D is restic's duration, `1y5m7d2h`: years, months
  and days are taken off the newest snapshot's local date as Go's `AddDate`
  does (March 31 less a month is March 3), then the hours.
- `--keep-tag a,b` keeps every snapshot with all of those tags, taking no
  place in any bucket.
- A snapshot is kept when any rule keeps it; the reasons are all of them.

Hours, days, weeks, months and years are the box's local ones, as restic's
(it reads a snapshot's time in the zone it was made in, the local one): the
zone of $TZ, else /etc/localtime. So a nightly backup at 00:30 in Brussels
counts for its own day, and a DST change makes one day of 23 or 25 hours,
not a day split in two. Giving no `--keep-*` at all is refused
rather than read as "keep nothing". As restic's `--group-by host,paths` (its
default), the policy applies to each group of snapshots on its own: by default
those of one host and one database (`--group-by host,db`; `tags` groups by
the set of tags as restic's), so on a repository shared by two databases
`--keep-last 2` keeps two of each. A manifest that is
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
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from odbox_backup.manifests import snapshot_time
from odbox_backup.repository import Repository, RepositoryError, Unauthenticated
from odbox_backup.store import refuse_unless_deletable
from odbox_backup.tags import tags_of
from odbox_common.console import count_of
from odbox_common.errors import UsageError

KINDS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
WITHIN_KINDS = ("hourly", "daily", "weekly", "monthly", "yearly")
GROUP_FIELDS = ("host", "db", "tags")
DEFAULT_GROUP = ("host", "db")
_DURATION_PART = re.compile(r"(\d+)([ymdh])")


def local_zone() -> dt.tzinfo:
    """The box's time zone: $TZ's (a zone name, or a path to a zone file), else
    /etc/localtime's; a $TZ that names no zone (a POSIX rule string) gives the offset in
    effect now (no DST change), and no zone at all UTC."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = os.environ.get("TZ", "").lstrip(":")
    try:
        if not name or name.startswith("/"):
            with open(name or "/etc/localtime", "rb") as f:
                return ZoneInfo.from_file(f, key=name or "localtime")
        return ZoneInfo(name)
    except (OSError, ValueError, ZoneInfoNotFoundError):
        if not name:
            return dt.UTC
        return dt.datetime.now().astimezone().tzinfo or dt.UTC


@dataclass(frozen=True)
class Duration:
    """restic's `--keep-within` duration: `1y5m7d2h`, each part at most once, any order."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str, flag: str = "--keep-within") -> Duration:
        parts = _DURATION_PART.findall(text)
        units = [unit for _, unit in parts]
        if not text or "".join(n + u for n, u in parts) != text or len(set(units)) < len(units):
            raise UsageError(
                f"{flag} takes a duration like 7d, 36h or 1y6m (years y, months m, days d, "
                f"hours h), not {text!r}"
            )
        values = {unit: int(n) for n, unit in parts}
        return cls(values.get("y", 0), values.get("m", 0), values.get("d", 0), values.get("h", 0))

    @property
    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def __str__(self) -> str:
        parts = zip((self.years, self.months, self.days, self.hours), "ymdh", strict=True)
        return "".join(f"{n}{u}" for n, u in parts if n) or "0h"

    def before(self, latest: dt.datetime, zone: dt.tzinfo) -> dt.datetime | None:
        """`latest` less this duration, as restic computes it: Go's `AddDate(-y, -m, -d)` on
        the local date (its overflow carried: March 31 less a month is March 3), then the
        hours off the absolute time. None when that is before the year 1 (nothing is older)."""
        t = latest.astimezone(zone)
        year, month = t.year - self.years, t.month - self.months
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
        try:
            first = dt.datetime(year, month, 1, t.hour, t.minute, t.second, t.microsecond)
            wall = first + dt.timedelta(days=t.day - 1 - self.days)
            return wall.replace(tzinfo=zone).astimezone(dt.UTC) - dt.timedelta(hours=self.hours)
        except (ValueError, OverflowError):
            return None


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
    within: Duration = Duration()
    within_hourly: Duration = Duration()
    within_daily: Duration = Duration()
    within_weekly: Duration = Duration()
    within_monthly: Duration = Duration()
    within_yearly: Duration = Duration()

    def __post_init__(self) -> None:
        for kind in KINDS:
            if getattr(self, kind) < 0:
                raise UsageError(f"--keep-{kind} must be 0 or more")

    def _withins(self) -> list[tuple[str, Duration]]:
        return [(k, d) for k in WITHIN_KINDS if not (d := getattr(self, f"within_{k}")).zero]

    @property
    def empty(self) -> bool:
        return (not any(getattr(self, kind) for kind in KINDS) and not self.tags
                and self.within.zero and not self._withins())  # fmt: skip

    def describe(self) -> str:
        parts = [f"{getattr(self, k)} {k}" for k in KINDS if getattr(self, k)]
        parts += [f"{k} within {d}" for k, d in self._withins()]
        parts += [f"within {self.within}"] if not self.within.zero else []
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
    """`--group-by`: a comma-separated subset of host, db and tags, or "" for one group."""
    fields = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in fields if f not in GROUP_FIELDS]
    if bad:
        raise UsageError(
            f"--group-by takes host, db, tags or several (comma-separated), not {bad[0]!r}"
        )
    return fields


def group_of(manifest: dict[str, Any], group_by: Sequence[str]) -> str:
    values = {"host": str(manifest.get("host", "?")),
              "db": str(manifest.get("database", {}).get("name", "?")),
              "tags": ",".join(tags_of(manifest))}  # fmt: skip
    return " ".join(f"{f}={values[f]}" for f in group_by)


def apply_grouped(
    times: dict[str, dt.datetime],
    groups: dict[str, str],
    policy: Policy,
    tags: Mapping[str, Sequence[str]] | None = None,
    zone: dt.tzinfo | None = None,
) -> list[Decision]:
    """`apply_policy` to each group on its own; every decision, newest first."""
    members: dict[str, dict[str, dt.datetime]] = {}
    for snapshot_id, t in times.items():
        members.setdefault(groups.get(snapshot_id, ""), {})[snapshot_id] = t
    decisions = []
    for group, group_times in members.items():
        for decision in apply_policy(group_times, policy, tags, zone):
            decision.group = group
            decisions.append(decision)
    return sorted(decisions, key=lambda d: (d.time, d.id), reverse=True)


def apply_policy(
    times: dict[str, dt.datetime],
    policy: Policy,
    tags: Mapping[str, Sequence[str]] | None = None,
    zone: dt.tzinfo | None = None,
    now: dt.datetime | None = None,
) -> list[Decision]:
    """One decision per snapshot, newest first (restic's forget policy; module docstring).
    `tags`: each snapshot's, for `policy.tags`; `zone`: whose hours and days (the box's)."""
    if policy.empty:
        raise UsageError(
            "give at least one --keep-last/-hourly/-daily/-weekly/-monthly/-yearly, "
            "--keep-within(-hourly/…) or --keep-tag: prune never reads no policy as keep nothing"
        )
    zone = zone or local_zone()
    now = now or dt.datetime.now(dt.UTC)
    ordered = sorted(times.items(), key=lambda item: (item[1], item[0]), reverse=True)
    left = {kind: getattr(policy, kind) for kind in KINDS}
    last: dict[str, int | None] = dict.fromkeys(KINDS)
    # The newest snapshot not dated after now is what --keep-within counts back from.
    latest = next((t for _, t in ordered if t < now), None)

    def cutoff(duration: Duration) -> dt.datetime | None:
        return None if latest is None else duration.before(latest, zone)

    within = None if policy.within.zero else (str(policy.within), cutoff(policy.within))
    withins = [(kind, str(d), cutoff(d)) for kind, d in policy._withins()]
    last_within: dict[str, int | None] = dict.fromkeys(WITHIN_KINDS)
    decisions = []
    for nr, (snapshot_id, utc) in enumerate(ordered):
        t = utc.astimezone(zone)
        have = set((tags or {}).get(snapshot_id, ()))
        # Tags take no place in any bucket (restic's "has tags").
        reasons = [f"tag {','.join(wanted)}" for wanted in policy.tags if have.issuperset(wanted)]
        if within is not None and (within[1] is None or utc > within[1]):
            reasons.append(f"within {within[0]}")
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
        for kind, text, since in withins:
            if since is not None and utc <= since:
                continue
            key = _key(kind, t, nr)
            if key != last_within[kind]:
                last_within[kind] = key
                reasons.append(f"{kind} within {text}")
        decisions.append(Decision(snapshot_id, utc, bool(reasons), reasons))
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
    group_by: Sequence[str] = DEFAULT_GROUP,
) -> PruneResult:
    """Apply `policy` to each group and delete what it forgets (the caller holds the lock)."""
    if policy.empty:
        apply_policy({}, policy)  # the same refusal, before any manifest is read
    repo.require_writable()
    if not dry_run:
        refuse_unless_deletable(repo.store, "prune")
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
            "objects of its pack; nothing was deleted (run `odbox-backup repair index` "
            "to rebuild it from the pack)"
        )
    lost = referenced - known
    if lost and (repo.orphan_packs or lost & repo.unindexed):
        # A pack without an index looks like a killed run's leftover, which prune deletes:
        # not while kept snapshots name objects no index places (its index may be what's gone).
        raise RepositoryError(
            f"{len(lost)} objects kept snapshots name are in no index (first: "
            f"{min(lost)[:12]}…) and {len(repo.orphan_packs)} packs have none: a prune would "
            "delete them; nothing was deleted (run `odbox-backup repair index` first)"
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
        report(
            f"forgot {count_of(len(forgotten), 'snapshot')}; "
            f"deleting {count_of(len(unreferenced), 'unused object')}"
        )
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
    for name in sorted(repo.shadowed):  # its content is in a pack: the file alone is unused
        repo.store.delete(repo.object_key(name))
    return PruneResult(decisions, forgotten, len(unreferenced), len(referenced), False,
                       len(rewrite), unauthenticated)  # fmt: skip


def explain(decisions: Sequence[Decision]) -> list[list[str]]:
    return [
        [d.id, d.time.isoformat(), d.group, "keep" if d.keep else "forget", ", ".join(d.reasons)]
        for d in decisions
    ]
