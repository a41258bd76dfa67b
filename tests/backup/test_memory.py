"""Memory does not grow with the bytes backed up, and only by a few hundred bytes a file.

A manifest has an entry per filestore file, so some memory per file is the
floor; these tests hold it to that: entries are kept as their JSON text, the
manifest is written through a streaming compressor, and a run reuses the
previous entries instead of copying them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from odbox_backup import backup, cache
from odbox_backup.backup import Source, run_backup
from odbox_backup.manifests import JSONTexts, entry_text, file_entries, json_pieces
from odbox_backup.repository import CorruptObject, Repository
from odbox_backup.restore import check_objects, restore_filestore
from odbox_backup.store import LocalStore

FILES = 20_000
# Peak traced memory per added file, measured between 4,000 and 20,000 files from the end of
# the dump (see dump_then_files): 570 bytes for an unchanged run (the entry's text, the
# object's name in the listing, the path while sorting), 560 for a full one, which also
# fills packs, whether the files are settled or all modified in the last 2 s (a filestore
# copied in just before the run: every file is read again after the dump). A set of their
# paths kept to the end of the run added 190 (what was measured as "format 3's 200 bytes
# more": the test's files were fresh or not by timing); a dict per entry would add 480.
BYTES_PER_FILE = 650
# A restore's, measured the same way: about 510 bytes (the entry's text, the packed object's
# name, its place, its slots in the set of names, which has 4 slots a name below 50,000
# names and 2 above, and in the table of places). A tuple per place, a str subclass per
# entry, a sort key per file or pathlib's table of interned names each adds 50 to 100.
RESTORE_BYTES_PER_FILE = 560


def test_json_pieces_is_json_dumps_in_pieces():
    rng = random.Random(7)
    documents = [
        {},
        [],
        {"b": list(range(5000)), "a": {"z": [{"y": 1, "x": 'é"\\\n'}] * 4001, "n": None}},
        [[]] * 2001,
        {"files": JSONTexts([entry_text(f"ab/{i:040x}", i, ["0" * 64]) for i in range(4500)])},
        [rng.random() for _ in range(3000)],
    ]
    for document in documents:
        joined = "".join(json_pieces(document))
        plain = json.loads(joined)
        if isinstance(document, dict) and "files" in document:
            assert plain["files"] == [json.loads(t) for t in document["files"]]
        else:
            assert joined == json.dumps(document, separators=(",", ":"), sort_keys=True)


def _filestore(root: Path, count: int, *, fresh: bool = False) -> None:
    """`count` files, modified an hour ago, or (`fresh`) an hour ahead: files a run takes
    for still being written (backup.UNSETTLED_NS) and reads again after the dump."""
    when = time.time_ns() + (3600 if fresh else -3600) * 1_000_000_000
    for i in range(count):
        data = b"file %d " % i + b"x" * (i % 700)
        name = hashlib.sha1(data).hexdigest()  # noqa: S324 (Odoo's file names)
        (root / name[:2]).mkdir(parents=True, exist_ok=True)
        (root / name[:2] / name).write_bytes(data)
        os.utime(root / name[:2] / name, ns=(when, when))


def _peak(fn):  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def dump_then_files(monkeypatch):  # type: ignore[no-untyped-def]
    """Every run dumps the database, then reads the filestore, and the peak counts from the end
    of the dump. A run reads both at once and reuses a dump while the WAL stands still, so the
    dump's buffers were in the peak or not by timing and by the shared cluster's background
    writes (a peak of 3 or 10 MB for the same run, seen under load); what grows with the files
    is measured alike in every run this way."""
    real_dump, real_read = backup.dump_database, backup.read_filestore
    dumped = threading.Event()

    def no_reuse(*args):  # type: ignore[no-untyped-def]
        dumped.clear()  # a run asks this before it starts reading the filestore
        return None

    def dump(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return real_dump(*args, **kwargs)
        finally:
            tracemalloc.reset_peak()
            dumped.set()

    def read(*args, **kwargs):  # type: ignore[no-untyped-def]
        dumped.wait()  # the first pass waits for the dump; the pass after it finds it set
        return real_read(*args, **kwargs)

    monkeypatch.setattr(backup, "_unchanged_dump", no_reuse)
    monkeypatch.setattr(backup, "dump_database", dump)
    monkeypatch.setattr(backup, "read_filestore", read)


def _peaks(odoo, folder: Path, count: int, fresh: bool) -> tuple[int, int, dict]:  # type: ignore[type-arg]
    """Peak traced memory of a full run and of an unchanged one over `count` files."""
    name, dsn, _ = odoo
    filestore = folder / "filestore"
    _filestore(filestore, count, fresh=fresh)
    repo = Repository.init(LocalStore(folder / "repo"))
    source = Source(dsn, name, filestore)
    first, full = _peak(lambda: run_backup(Repository.open(repo.store), source))
    cache.save(folder / "cache", repo, first)

    def again():  # type: ignore[no-untyped-def]
        reopened = Repository.open(repo.store)
        return run_backup(reopened, source, previous=cache.load(folder / "cache", reopened))

    second, unchanged = _peak(again)
    assert second["totals"]["new_objects"] <= 2  # the dump's changed chunks at most: no file
    manifest = repo.read_snapshot(second["id"])
    assert isinstance(manifest["filestore"]["files"], JSONTexts)
    plain = repo.read_snapshot(second["id"], compact=False)["filestore"]["files"]
    assert list(file_entries(manifest)) == plain == list(file_entries(first))
    assert len(plain) == count and [f["path"] for f in plain] == sorted(f["path"] for f in plain)
    return full, unchanged, manifest


@pytest.mark.parametrize("fresh", [False, True], ids=["settled", "fresh"])
def test_a_run_holds_a_few_hundred_bytes_a_file(odoo, tmp_path, dump_then_files, fresh):
    small = _peaks(odoo, tmp_path / "small", FILES // 5, fresh)
    large = _peaks(odoo, tmp_path / "large", FILES, fresh)
    per_file = [(b - a) / (FILES - FILES // 5) for a, b in zip(small[:2], large[:2], strict=True)]
    print(f"\nbytes a file, full and unchanged run: {per_file[0]:.0f}, {per_file[1]:.0f}")
    assert max(per_file) < BYTES_PER_FILE, per_file


def _restore_peak(odoo, folder: Path, count: int) -> int:
    """Peak traced memory of a restore's filestore half (every object checked, then every
    file written in pack order) over `count` files."""
    name, dsn, _ = odoo
    filestore = folder / "filestore"
    _filestore(filestore, count)
    repo = Repository.init(LocalStore(folder / "repo"))
    snapshot = run_backup(Repository.open(repo.store), Source(dsn, name, filestore))

    def restore() -> tuple[int, int]:
        reader = Repository.open(repo.store)
        manifest = reader.read_snapshot(snapshot["id"])
        check_objects(reader, manifest)
        return restore_filestore(reader, manifest, folder / "restored")

    (files, _), peak = _peak(restore)
    assert files == count
    restored = folder / "restored"
    for f in file_entries(snapshot):
        assert (restored / f["path"]).read_bytes() == (filestore / f["path"]).read_bytes()
    return int(peak)


def test_a_restore_holds_a_few_hundred_bytes_a_file(odoo, tmp_path):
    small = _restore_peak(odoo, tmp_path / "small", FILES // 5)
    large = _restore_peak(odoo, tmp_path / "large", FILES)
    per_file = (large - small) / (FILES - FILES // 5)
    assert per_file < RESTORE_BYTES_PER_FILE, per_file


def test_a_file_entry_that_is_not_an_object_is_damage(tmp_path):
    repo = Repository.init(LocalStore(tmp_path / "repo"))
    good = {"path": "ab/cd", "size": 1, "objects": ["0" * 64]}
    for files, extra in (
        (["not an entry"], {}),
        ([{"path": "ab/cd", "size": 1}], {}),
        # as many entry-shaped objects elsewhere as strings in the list: still caught
        ([good, "not an entry"], {"elsewhere": good}),
    ):
        snapshot_id = repo.next_snapshot_id()
        repo.write_snapshot({"id": snapshot_id, "database": {"objects": []},
                             "filestore": {"files": files}, **extra})  # fmt: skip
        try:
            repo.read_snapshot(snapshot_id)
        except CorruptObject as e:
            assert "is damaged" in str(e) and "filestore.files" in str(e)
        else:
            raise AssertionError(f"{files} was read as entries")


# `restore latest` into a database no snapshot names looks at every snapshot's database name
# first: about 125 bytes a file (the newest manifest's stored bytes, kept for the read that
# follows, and their copy while the MAC is checked). Reading each manifest whole for its name,
# two of them alive at once, cost 550 and set the peak of a restore at 200,000 files (206 MB).
RESOLVE_BYTES_PER_FILE = 200


def _resolve_peak(odoo, folder: Path, count: int) -> int:
    """Peak traced memory of finding the snapshot `restore latest --db elsewhere` restores,
    in a repository of two snapshots of `count` files."""
    name, dsn, _ = odoo
    filestore = folder / "filestore"
    _filestore(filestore, count)
    repo = Repository.init(LocalStore(folder / "repo"))
    for _ in range(2):
        newest = run_backup(Repository.open(repo.store), Source(dsn, name, filestore))
    reader = Repository.open(repo.store)
    warnings: list[str] = []
    reader.warn = warnings.append
    found, peak = _peak(lambda: reader.resolve("latest", database="elsewhere"))
    assert found == newest["id"] and f"of database {name}" in warnings[-1]
    assert reader.resolve("latest", database=name) == newest["id"]
    assert reader.read_snapshot(found)["filestore"]["count"] == count  # the kept bytes serve
    return int(peak)


def test_finding_the_latest_snapshot_of_a_database_does_not_read_whole_manifests(odoo, tmp_path):
    small = _resolve_peak(odoo, tmp_path / "small", FILES // 5)
    large = _resolve_peak(odoo, tmp_path / "large", FILES)
    per_file = (large - small) / (FILES - FILES // 5)
    print(f"\nbytes a file, resolving latest of another database: {per_file:.0f}")
    assert per_file < RESOLVE_BYTES_PER_FILE, per_file


def test_a_database_part_longer_than_the_first_read_is_read_on(tmp_path):
    repo = Repository.init(LocalStore(tmp_path / "repo"))
    snapshot_id = repo.next_snapshot_id()
    chunks = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(3000)]  # 200 KB of names
    repo.write_snapshot({"id": snapshot_id, "database": {"objects": chunks, "name": "odoo é"},
                         "filestore": {"files": []}})  # fmt: skip
    assert Repository.open(repo.store).snapshot_database(snapshot_id) == "odoo é"
