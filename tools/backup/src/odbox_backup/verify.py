"""`odbox-backup verify`: is every snapshot whole, and (with --read-data) is every byte right?

Without `--read-data` it reads every manifest and checks that each object it
names is in the repository (one listing and the packs' indexes, no object is
downloaded); a damaged or unauthenticated index, an index whose pack is gone,
and a pack or object whose stored size is not the one its authenticated index
gives are problems too. Of an encrypted repository, without the identity (the
box's case), it checks what can be checked: every manifest's MAC (and that
none is dated in the future), every index's, and that every pack and object
they name is there at its size; a healthy repository exits 0. With
`--read-data` it also reads every object the snapshots name, once each,
checks its content against its name, and checks that the sizes add up to
each file's and each dump's size. Problems are collected, not raised: the
report names every one, and the command exits 3 when there is any.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from odbox_backup.manifests import file_entries
from odbox_backup.repository import Repository, RepositoryError
from odbox_backup.store import LocalStore
from odbox_common.console import count_of
from odbox_common.errors import ToolError


@dataclass
class SnapshotReport:
    id: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.ok = False
        self.problems.append(text.removeprefix(f"snapshot {self.id} "))  # said once, in front


@dataclass
class VerifyReport:
    repository: str
    read_data: bool
    snapshots: list[SnapshotReport] = field(default_factory=list)
    objects_referenced: int = 0
    objects_read: int = 0
    bytes_read: int = 0
    objects_unreferenced: int = 0
    leftovers: int = 0
    orphan_packs: int = 0
    keyless: bool = False  # encrypted, no identity: manifests authenticated, not read
    # --read-data-subset: the packs and objects alone chosen (keys), their stored bytes, and
    # the stored bytes of all that hold an object the snapshots name
    subset: list[str] | None = None
    subset_bytes: int = 0
    stored_bytes: int = 0
    damaged_keys: set[str] = field(default_factory=set)  # of those read
    storage_problems: list[str] = field(default_factory=list)  # indexes, packs, sizes

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.snapshots) and not self.storage_problems

    @property
    def problems(self) -> list[str]:
        return self.storage_problems + [
            f"snapshot {s.id}: {p}" for s in self.snapshots for p in s.problems
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "ok": self.ok,
            "read_data": self.read_data,
            "keyless": self.keyless,
            "snapshots": [{"id": s.id, "ok": s.ok, "problems": s.problems} for s in self.snapshots],
            "objects": {
                "referenced": self.objects_referenced,
                "read": self.objects_read,
                "bytes_read": self.bytes_read,
                "unreferenced": self.objects_unreferenced,
            },
            **(
                {
                    "subset": {
                        "keys": self.subset,
                        "stored_bytes": self.subset_bytes,
                        "of_stored_bytes": self.stored_bytes,
                    }
                }
                if self.subset is not None
                else {}
            ),
            "temp_files": self.leftovers,
            "orphan_packs": self.orphan_packs,
            "problems": self.problems,
        }


def verify(
    repo: Repository,
    snapshot_ids: Iterable[str],
    *,
    read_data: bool = False,
    progress: Callable[[int], None] = lambda _: None,
    subset: Callable[[dict[str, int]], set[str]] | None = None,
) -> VerifyReport:
    """`subset`: with `read_data`, given the stored size of every pack and object alone that
    holds an object the snapshots name (by key), the keys to read (`odbox_backup.subset`)."""
    keyless = repo.config.encrypted and not repo.identities
    report = VerifyReport(repo.store.url, read_data and not keyless, keyless=keyless)
    known = repo.known_objects(with_places=True)
    manifests: list[tuple[SnapshotReport, dict[str, Any]]] = []
    referenced: set[str] = set()
    for snapshot_id in snapshot_ids:
        entry = SnapshotReport(snapshot_id)
        report.snapshots.append(entry)
        if keyless:
            try:
                repo.snapshot_blob(snapshot_id)
            except ToolError as e:
                entry.problem(str(e))
            continue
        try:
            manifest = repo.read_snapshot(snapshot_id)
            names = list(repo.objects_of(manifest))
        except (ToolError, KeyError, TypeError) as e:
            entry.problem(str(e) if isinstance(e, ToolError) else f"the manifest lacks {e}")
            continue
        missing = [n for n in names if n not in known]
        if missing:
            entry.problem(f"{count_of(len(missing), 'object')} missing (first: {missing[0][:12]}…)")
        referenced.update(names)
        manifests.append((entry, manifest))
    report.objects_referenced = len(referenced) if not keyless else len(known)
    report.objects_unreferenced = len((known | repo.unindexed) - referenced) if not keyless else 0
    report.orphan_packs = len(repo.orphan_packs)
    report.storage_problems = [repo.index_problems.get(key, f"{key} is damaged")
                               for key in repo.damaged_indexes]  # fmt: skip
    report.storage_problems += [
        f"pack {pack_id[:12]}… is missing: its index names objects that are gone"
        for pack_id in repo.missing_packs
    ]
    if repo.auth is not None:
        report.storage_problems += _size_problems(repo)
    if isinstance(repo.store, LocalStore):
        report.leftovers = sum(1 for _ in repo.store.temp_files())
    if not read_data or keyless:
        return report

    sizes: dict[str, int] = {}
    bad: dict[str, str] = {}
    wanted = referenced & known
    if subset is not None:
        wanted = _choose(repo, wanted, subset, report)
    for name in sorted(wanted, key=repo.read_order):  # each pack read once
        try:
            content = repo.get_object(name)
        except RepositoryError as e:
            bad[name] = str(e)
            report.damaged_keys.add(_holder(repo, name))
            continue
        sizes[name] = len(content)
        report.objects_read += 1
        report.bytes_read += len(content)
        progress(len(content))
    for entry, manifest in manifests:
        for name in repo.objects_of(manifest):
            if name in bad:
                entry.problem(bad[name])
        database = manifest["database"]
        if all(n in sizes for n in database["objects"]):
            got = sum(sizes[n] for n in database["objects"])
            if got != database["size"]:
                entry.problem(f"the dump adds up to {got} bytes, not {database['size']}")
        for f in file_entries(manifest):
            if all(n in sizes for n in f["objects"]):
                got = sum(sizes[n] for n in f["objects"])
                if got != f["size"]:
                    entry.problem(f"{f['path']} adds up to {got} bytes, not {f['size']}")
        entry.problems = list(dict.fromkeys(entry.problems))
    return report


def _holder(repo: Repository, name: str) -> str:
    """The key an object is read from: its pack's, or its own."""
    place = repo.location(name)
    return repo.pack_key(place[0]) if place is not None else repo.object_key(name)


def _choose(repo: Repository, names: set[str], subset: Callable[[dict[str, int]], set[str]],
            report: VerifyReport) -> set[str]:  # fmt: skip
    """The objects of `names` held by the packs and objects alone `subset` picks."""
    stored = dict(repo.store.sizes("packs")) | dict(repo.store.sizes("objects"))
    holders = {}
    for name in names:
        key = _holder(repo, name)
        holders[key] = stored.get(key, 0)
    chosen = subset(holders)
    report.subset = sorted(chosen)
    report.subset_bytes = sum(holders[k] for k in chosen)
    report.stored_bytes = sum(holders.values())
    return {name for name in names if _holder(repo, name) in chosen}


def _size_problems(repo: Repository) -> list[str]:
    """Every indexed pack, and every object alone an authenticated index names, stored at
    the size that index gives (one listing of each folder; nothing is downloaded)."""
    problems = []
    packs = {key.rsplit("/", 1)[1]: size for key, size in repo.store.sizes("packs")}
    # Only packs that hold the copy of some object that counts: one whose every object a
    # newer pack holds again (a run after a power cut stored them anew) is not read.
    used = repo.packs()
    for pack_id, expected in sorted(repo.pack_sizes.items()):
        stored = packs.get(pack_id)
        if pack_id in used and stored is not None and stored != expected:
            problems.append(f"pack {pack_id[:12]}… is {stored} bytes, its index says {expected}")
    objects = dict(repo.store.sizes("objects"))
    for name, expected_size in sorted(repo.indexed_alone().items()):
        stored = objects.get(repo.object_key(name))
        if stored is None:
            problems.append(f"object {name[:12]}… is missing (an index names it)")
        elif stored != expected_size:
            problems.append(
                f"object {name[:12]}… is {stored} bytes, its index says {expected_size}"
            )
    return problems
