"""`odbox-backup unlock` and `repair index`: what an operator runs when a repository is stuck.

`unlock` removes stale locks (a killed run's on this host, or any older than a day), and
with `--remove-all` every lock, saying whose. `repair index` rebuilds the indexes from the
packs and objects themselves: a pack is the zstd frames of its objects one after the other
(FORMAT.md, "Packs"), each frame saying how long it is, and an object's name is the SHA-256
of its content, so reading a pack (decrypted with the identity) gives back every
(name, offset, length) its index held, each one checked by its hash. A rebuilt index is
authenticated under the repository's key like any other; it names only content that was
read and matched its name, so whoever planted a pack gets nothing trusted that is not
really stored. A damaged index would otherwise stop every prune, and a missing one would let
prune take the pack for a killed run's leftover and delete what snapshots still name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from odbox_backup import locks
from odbox_backup.repository import Repository, RepositoryError
from odbox_backup.store import refuse_unless_deletable
from odbox_common.errors import UsageError

ZSTD_MAGIC = 0xFD2FB528


@dataclass
class Unlocked:
    removed: list[tuple[locks.LockInfo, bool]] = field(default_factory=list)  # (lock, was live)
    kept: list[locks.LockInfo] = field(default_factory=list)


def unlock(repo: Repository, *, remove_all: bool = False) -> Unlocked:
    """Remove the stale locks, and with `remove_all` the live-looking ones too."""
    result = Unlocked()
    for lock in locks.read_locks(repo.store):
        stale = locks.is_stale(lock)
        if stale or remove_all:
            repo.store.delete(lock.key)
            result.removed.append((lock, not stale))
        else:
            result.kept.append(lock)
    return result


def zstd_frames(data: bytes | memoryview) -> Iterator[tuple[int, int]]:
    """(offset, length) of each zstd frame in `data`, from the frames' own headers and block
    headers (RFC 8878, 3.1.1). python-zstandard has no call for a frame's compressed size
    (libzstd's ZSTD_findFrameCompressedSize), and decompressing to find where each frame
    ends copies the rest of the pack once per object."""
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        start = offset
        if (
            len(view) - offset < 6
            or int.from_bytes(view[offset : offset + 4], "little") != ZSTD_MAGIC
        ):
            raise ValueError(f"no zstd frame at byte {offset}")
        descriptor = view[offset + 4]
        fcs_flag, single, checksum, dict_flag = (
            descriptor >> 6,
            descriptor >> 5 & 1,
            descriptor >> 2 & 1,
            descriptor & 3,
        )
        offset += 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
        offset += (1 if single else 0, 2, 4, 8)[fcs_flag]
        while True:
            if offset + 3 > len(view):
                raise ValueError(f"the zstd frame at byte {start} is cut short")
            header = int.from_bytes(view[offset : offset + 3], "little")
            last, kind, size = header & 1, header >> 1 & 3, header >> 3
            if kind == 3:
                raise ValueError(f"the zstd frame at byte {start} has a reserved block type")
            offset += 3 + (1 if kind == 1 else size)
            if last:
                break
        offset += 4 if checksum else 0
        if offset > len(view):
            raise ValueError(f"the zstd frame at byte {start} is cut short")
        yield start, offset - start


@dataclass
class Repaired:
    packs_read: int = 0
    indexes_written: int = 0  # for packs that had none
    indexes_replaced: int = 0  # damaged or forged ones, rebuilt from their pack
    indexes_removed: int = 0  # damaged ones with no pack of their ID: rebuilt as objects indexes
    objects_indexed: int = 0  # objects stored alone that no index named, now named
    lost: list[str] = field(default_factory=list)  # what could not be read back, one line each


def _pack_index(repo: Repository, pack_id: str) -> tuple[dict[str, object] | None, str | None]:
    """The index a pack's own bytes give, or why it cannot be read (the objects of its
    readable frames before a damaged one are kept)."""
    what = f"pack {pack_id[:12]}…"
    try:
        data = repo.store.get(repo.pack_key(pack_id))
        plain = repo.codec.unseal(data, what)  # the codec's one way to decrypt
    except RepositoryError as e:
        return None, str(e)
    blobs: list[list[object]] = []
    problem = None
    try:
        for offset, length in zstd_frames(plain):
            content = repo.codec.decompress(memoryview(plain)[offset : offset + length], what)
            blobs.append([hashlib.sha256(content).hexdigest(), offset, length])
    except (ValueError, RepositoryError) as e:
        problem = f"{what} is damaged ({e}): {len(blobs)} objects before the damage were kept"
    if not blobs:
        return None, problem or f"{what} holds no object"
    return {"pack": pack_id, "size": len(data), "blobs": blobs}, problem


def repair_index(repo: Repository, report: Callable[[str], None] = lambda _: None) -> Repaired:
    """Rebuild every damaged or missing index from its pack, and index the objects stored
    alone that no index names (each read and checked against its name). The caller holds
    the repository's lock in `prune` mode: nothing else writes meanwhile."""
    repo.require_writable()
    if repo.config.encrypted and not repo.identities:
        raise UsageError(
            "repair index reads every pack it indexes, and this repository is encrypted: "
            "pass --identity (run it where the admin's key is)"
        )
    assert repo.auth is not None
    refuse_unless_deletable(repo.store, "repair index")  # it replaces and removes indexes
    repo.known_objects(with_places=True)  # reads every index: what is damaged, what lacks one
    packs = {key.rsplit("/", 1)[1] for key in repo.store.list("packs")}
    result = Repaired()
    replace = [key for key in repo.damaged_indexes if key.rsplit("/", 1)[1] in packs]
    stray = [key for key in repo.damaged_indexes if key not in replace]
    # A pack whose index is damaged is also among the packs without one: read it once.
    for pack_id in dict.fromkeys([key.rsplit("/", 1)[1] for key in replace] + repo.orphan_packs):
        document, problem = _pack_index(repo, pack_id)
        result.packs_read += 1
        if problem:
            result.lost.append(problem)
            report(problem)
        key = repo.index_key(pack_id)
        if document is None:
            if key in replace:  # nothing of it can be read: its index only blocks prune
                repo.store.delete(key)
                result.indexes_removed += 1
            continue
        body = repo.auth.wrap("index", pack_id, json.dumps(document).encode())
        repo.store.put(key, body, sync=False, replace=True)
        if key in replace:
            result.indexes_replaced += 1
        else:
            result.indexes_written += 1
    entries = []
    sizes = dict(repo.store.sizes("objects"))
    for name in sorted(repo.unindexed):
        key = repo.object_key(name)
        what = f"object {name[:12]}…"
        try:
            content = repo.codec.decode(repo.store.get(key), what)
        except RepositoryError as e:
            result.lost.append(str(e))
            continue
        if hashlib.sha256(content).hexdigest() != name:
            result.lost.append(f"{what} is damaged: its content does not match its name")
            continue
        entries.append((name, sizes.get(key, 0)))
    if entries:
        repo.write_objects_index(entries)
        result.objects_indexed = len(entries)
    repo.store.flush()  # the new indexes on disk before a damaged one goes
    for key in stray:
        repo.store.delete(key)
        result.indexes_removed += 1
    return result
