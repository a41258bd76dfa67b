"""`odbox-backup verify`: is every snapshot whole, and (with --read-data) is every byte right?

Without `--read-data` it reads every manifest and checks that each object it
names is in the repository (one listing and the packs' indexes, no object is
downloaded); a damaged index is a problem too. With
`--read-data` it also reads every object the snapshots name, once each,
checks its content against its name, and checks that the sizes add up to
each file's and each dump's size. Problems are collected, not raised: the
report names every one, and the command exits 3 when there is any.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from odbox_backup.repository import Repository, RepositoryError, file_entries
from odbox_backup.store import LocalStore
from odbox_common.errors import ToolError


@dataclass
class SnapshotReport:
    id: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.ok = False
        self.problems.append(text)


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
    damaged_indexes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.snapshots) and not self.damaged_indexes

    @property
    def problems(self) -> list[str]:
        damaged = [f"{key} is damaged: the objects of its pack cannot be found"
                   for key in self.damaged_indexes]  # fmt: skip
        return damaged + [f"snapshot {s.id}: {p}" for s in self.snapshots for p in s.problems]

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "ok": self.ok,
            "read_data": self.read_data,
            "snapshots": [{"id": s.id, "ok": s.ok, "problems": s.problems} for s in self.snapshots],
            "objects": {
                "referenced": self.objects_referenced,
                "read": self.objects_read,
                "bytes_read": self.bytes_read,
                "unreferenced": self.objects_unreferenced,
            },
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
) -> VerifyReport:
    report = VerifyReport(repo.store.url, read_data)
    known = repo.known_objects(with_places=True)
    manifests: list[tuple[SnapshotReport, dict[str, Any]]] = []
    referenced: set[str] = set()
    for snapshot_id in snapshot_ids:
        entry = SnapshotReport(snapshot_id)
        report.snapshots.append(entry)
        try:
            manifest = repo.read_snapshot(snapshot_id)
            names = list(repo.objects_of(manifest))
        except (ToolError, KeyError, TypeError) as e:
            entry.problem(str(e) if isinstance(e, ToolError) else f"the manifest lacks {e}")
            continue
        missing = [n for n in names if n not in known]
        if missing:
            entry.problem(f"{len(missing)} objects are missing (first: {missing[0][:12]}…)")
        referenced.update(names)
        manifests.append((entry, manifest))
    report.objects_referenced = len(referenced)
    report.objects_unreferenced = len(known - referenced)
    report.orphan_packs = len(repo.orphan_packs)
    report.damaged_indexes = list(repo.damaged_indexes)
    if isinstance(repo.store, LocalStore):
        report.leftovers = sum(1 for _ in repo.store.temp_files())
    if not read_data:
        return report

    sizes: dict[str, int] = {}
    bad: dict[str, str] = {}
    for name in sorted(referenced & known, key=repo.read_order):  # each pack read once
        try:
            content = repo.get_object(name)
        except RepositoryError as e:
            bad[name] = str(e)
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
