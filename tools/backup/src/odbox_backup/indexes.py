"""What a repository stores, read from its listing and its indexes (FORMAT.md, "Packs"):
which objects are there, which may not be on disk yet, and where each packed one is.
Restic's `internal/repository/index` is the model. Writing packs is packs.py's.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from odbox_backup.codec import Authenticator, Codec, RepositoryError, Unauthenticated
from odbox_backup.store import LocalStore, NotFound, Store

if TYPE_CHECKING:
    from odbox_backup.repository import Config

OBJECT_NAME = re.compile(r"[0-9a-f]{64}")


def parse_objects_index(document: dict[str, Any], key: str) -> list[tuple[str, int]]:
    """An index of objects stored alone (version 3): (name, stored size) of each."""
    entries = []
    for item in document["objects"]:
        name, size = item
        if not isinstance(name, str) or not OBJECT_NAME.fullmatch(name) or type(size) is not int:
            raise ValueError(f"{key} holds a bad entry")
        entries.append((name, size))
    return entries


def parse_index(document: dict[str, Any], pack_id: str) -> list[tuple[str, int, int]]:
    """An `index/<pack ID>` file's blobs: (name, offset, length) in the decrypted pack."""
    if not isinstance(document, dict) or document.get("pack") != pack_id:
        raise ValueError(f"index {pack_id[:12]}… is not that pack's")
    blobs = []
    for item in document["blobs"]:
        name, offset, length = item
        if (not isinstance(name, str) or not OBJECT_NAME.fullmatch(name)
                or type(offset) is not int or type(length) is not int
                or not 0 <= offset <= FIELD_MASK or not 0 < length <= FIELD_MASK):  # fmt: skip
            raise ValueError(f"index {pack_id[:12]}… holds a bad entry")
        blobs.append((name, offset, length))
    return blobs


# A packed object's place, as one int: pack number (an index into the packs read), offset
# and length. Offsets and lengths below 2**36 (64 GiB): `parse_index` refuses larger ones.
FIELD = 36
PACK_SHIFT = 2 * FIELD
FIELD_MASK = (1 << FIELD) - 1


def place_as_int(pack_no: int, offset: int, length: int) -> int:
    return pack_no << PACK_SHIFT | offset << FIELD | length


def place_from_int(place: int) -> tuple[int, int, int]:
    return place >> PACK_SHIFT, place >> FIELD & FIELD_MASK, place & FIELD_MASK


class Indexes:
    """The listing and index half of a `Repository` (its base class)."""

    def __init__(
        self, store: Store, config: Config, codec: Codec, auth: Authenticator | None
    ) -> None:
        self.store = store
        self.config = config
        self.codec = codec
        self.auth = auth  # None only for a version 1 or 2 repository, read only
        self._known: set[str] | None = None
        self._unsynced: set[str] | None = None
        self._listing = threading.Lock()  # the dump and the filestore threads both ask
        # Packs (version 2): where each packed blob is (one int, `place_as_int`), and each
        # pack's blobs (built for prune only). Read only when an object is read: a run,
        # which only writes, never holds them. A restore of 200,000 files holds a place for
        # each.
        self._where: dict[str, int] | None = None
        self._pack_ids: list[str] = []
        self._pack_nos: dict[str, int] = {}
        self._packs: dict[str, list[str]] | None = None
        self.orphan_packs: list[str] = []  # packs without an index: a killed run's
        self.damaged_indexes: list[str] = []
        self.index_problems: dict[str, str] = {}  # why each damaged index is
        # Version 3: objects stored alone are trusted for dedup only when an authenticated
        # index names them (`index/<ID>` of kind "objects"). Their stored sizes, and which
        # indexes are of that kind.
        self._alone_sizes: dict[str, int] = {}
        self.object_indexes: list[str] = []
        self.pack_sizes: dict[str, int] = {}  # version 3: each indexed pack's stored size
        self.missing_packs: list[str] = []  # indexes whose pack is gone (version 3)
        # Objects alone no authenticated index names (version 3): a killed run's, or planted.
        # Never trusted; prune deletes those no snapshot names.
        self.unindexed: set[str] = set()
        self.shadowed: set[str] = set()

    @staticmethod
    def object_key(name: str) -> str:
        return f"objects/{name[:2]}/{name}"

    @staticmethod
    def pack_key(pack_id: str) -> str:
        return f"packs/{pack_id[:2]}/{pack_id}"

    @staticmethod
    def index_key(pack_id: str) -> str:
        return f"index/{pack_id}"

    def known_objects(self, *, with_places: bool = False) -> set[str]:
        """Names of every stored object, alone or in a pack (listed once, then kept up to
        date by `put_object`). `with_places`: also where each packed one is, in the same
        pass, for a reader (a run, which only writes, does without that memory)."""
        if self._known is None or (with_places and self._where is None):
            self._list_objects(with_places)
        assert self._known is not None
        return self._known

    def unsynced_objects(self) -> set[str]:
        """Objects that may not be on disk: in a local repository, those written after the
        newest manifest (alone, or in a pack whose index is that new). Objects are written
        without an fsync each, and every writer flushes them all before its manifest
        (FORMAT.md, "Atomic writes"); so an object newer than every manifest was written by
        a run that died first and, after a power cut, could be empty. It is not trusted for
        dedup: a run that needs it writes it again."""
        if self._unsynced is None:
            self._list_objects(False)
        assert self._unsynced is not None
        return self._unsynced

    def _list_objects(self, with_places: bool) -> None:
        """One listing for both sets; no per-object record beyond its name, and with
        `with_places` a packed one's place (a repository holds an object per filestore
        file: hundreds of thousands). Places asked for after a listing without them read
        the indexes again."""
        with self._listing:
            where: dict[str, int] | None = {} if with_places else None
            if self._known is None:
                self._known, self._unsynced = self._listed(where)
            elif where is not None and self._where is None and self.config.packing is not None:
                self._read_indexes(set(), set(), None, where)
            if where is not None and self._where is None:
                self._where = where

    def _mtimes(self, prefix: str) -> Iterable[tuple[str, int]]:
        """(key, modification time in ns) under `prefix`; 0 on S3, whose writes need no
        "unsynced" rule (a PUT is durable when it returns)."""
        if isinstance(self.store, LocalStore):
            return self.store.mtimes(prefix)
        return ((key, 0) for key in self.store.list(prefix))

    def _listed(self, where: dict[str, int] | None) -> tuple[set[str], set[str]]:
        known: set[str] = set()
        unsynced: set[str] = set()
        newest = None
        if isinstance(self.store, LocalStore):
            newest = max((mtime for _, mtime in self.store.mtimes("snapshots")), default=-1)
        # Version 3: an object alone counts only once an authenticated index names it (one
        # planted under the name of a file the box will store must not stop it storing it).
        alone: dict[str, bool] | None = {} if self.auth is not None else None
        for key, mtime in self._mtimes("objects"):
            name = key.rsplit("/", 1)[1]
            if OBJECT_NAME.fullmatch(name):
                fresh = newest is not None and mtime > newest
                if alone is not None:
                    alone[name] = fresh
                    continue
                known.add(name)
                if fresh:
                    unsynced.add(name)
        if self.config.packing is not None:
            self._read_indexes(known, unsynced, newest, where, alone)
        if alone is not None:
            self.unindexed = {name for name in alone if name not in known}
            # Alone but named by no index, their content in a pack (S3 writes into a pack
            # rather than over such a file): never read, and prune deletes them.
            self.shadowed = {n for n in alone if n in known and n not in self._alone_sizes}
        return known, unsynced

    def _index_document(self, key: str, stored: bytes | None = None) -> dict[str, Any]:
        """An index file's JSON (`stored`: its bytes, already read), its MAC checked."""
        index_id = key.rsplit("/", 1)[1]
        data: bytes | memoryview = self.store.get(key) if stored is None else stored
        if self.auth is not None:
            data = self.auth.unwrap("index", index_id, bytes(data), f"{key}")
        document = json.loads(bytes(data))
        if not isinstance(document, dict):
            raise ValueError(f"{key} is not a JSON object")
        return document

    def _read_indexes(
        self,
        known: set[str],
        unsynced: set[str],
        newest: int | None,
        where: dict[str, int] | None,
        alone: dict[str, bool] | None = None,
    ) -> None:
        """Every index: a pack's blobs become known (and unsynced when the index is newer
        than every manifest), and with `where`, their places; an index of objects stored
        alone (version 3) makes those of them that are listed (`alone`) known. A pack
        without an index is a killed run's leftover; an index without its pack names
        nothing stored (version 3: a problem, since prune deletes the index first)."""
        # Indexes listed before packs: a pack is written before its index, so every index
        # seen has its pack listed unless the pack is really gone.
        # Oldest first, so the newest index of an object wins: a run that found an unsynced
        # pack after a power cut stored its objects again, in a newer pack.
        listing = sorted(self._mtimes("index"), key=lambda item: item[1])
        packs = {k.rsplit("/", 1)[1]: k for k in self.store.list("packs")}
        packs = {p: k for p, k in packs.items() if OBJECT_NAME.fullmatch(p)}
        indexed: set[str] = set()
        damaged: list[str] = []
        self.index_problems = {}
        self.object_indexes = []
        self.missing_packs = []
        for key, mtime in listing:
            index_id = key.rsplit("/", 1)[1]
            if not OBJECT_NAME.fullmatch(index_id):
                continue
            if self.auth is None and index_id not in packs:
                continue
            fresh = newest is not None and mtime > newest
            try:
                document = self._index_document(key)
                if self.auth is not None and "objects" in document:
                    entries = parse_objects_index(document, key)
                    self.object_indexes.append(key)
                    for name, size in entries:
                        self._alone_sizes[name] = size
                        if alone is not None and name in alone:
                            known.add(name)
                            if fresh or alone[name]:
                                unsynced.add(name)
                    continue
                blobs = parse_index(document, index_id)
                pack_size = document.get("size") if self.auth is not None else 0
                if type(pack_size) is not int:
                    raise ValueError(f"{key} gives no size")
            except NotFound:
                continue  # deleted meanwhile (a prune's rewrite)
            except (ValueError, KeyError, TypeError, RepositoryError) as e:
                damaged.append(key)
                self.index_problems[key] = (
                    str(e) if isinstance(e, Unauthenticated)
                    else f"{key} is damaged: the objects of its pack cannot be found"
                )  # fmt: skip
                continue
            if index_id not in packs:
                self.missing_packs.append(index_id)
                continue
            indexed.add(index_id)
            if self.auth is not None:
                self.pack_sizes[index_id] = pack_size
            pack_no = self._pack_no(index_id) if where is not None else 0
            for name, offset, length in blobs:
                known.add(name)
                if fresh:
                    unsynced.add(name)
                if where is not None:
                    where[name] = place_as_int(pack_no, offset, length)
        self.orphan_packs = sorted(set(packs) - indexed)
        self.damaged_indexes = damaged

    def _pack_no(self, pack_id: str) -> int:
        """A small number for a pack ID, for `place_as_int` (the caller holds `_listing`)."""
        number = self._pack_nos.get(pack_id)
        if number is None:
            number = self._pack_nos[pack_id] = len(self._pack_ids)
            self._pack_ids.append(pack_id)
        return number

    def _locate(self) -> dict[str, int]:
        """Where each packed object is, as `place_as_int` makes it."""
        self.known_objects(with_places=True)
        assert self._where is not None
        return self._where

    def packs(self) -> dict[str, list[str]]:
        """Each indexed pack's blob names, in pack order (built when first asked: prune)."""
        where = self._locate()
        with self._listing:
            if self._packs is None:
                packs: dict[str, list[str]] = {}
                for name in sorted(where, key=where.__getitem__):
                    packs.setdefault(self._pack_ids[where[name] >> PACK_SHIFT], []).append(name)
                self._packs = packs
            return self._packs

    def location(self, name: str) -> tuple[str, int] | None:
        """(pack ID, offset) of a packed object, None for one stored alone."""
        place = self._locate().get(name)
        if place is None:
            return None
        pack_no, offset, _ = place_from_int(place)
        return self._pack_ids[pack_no], offset

    def read_order(self, name: str) -> int:
        """A sort key that reads objects alone first, then each pack once, front to back
        (one int per name: sorting 200,000 names for `verify --read-data` stays small)."""
        return self._locate().get(name, -1)

    def stored_size(self, name: str) -> int | None:
        """The bytes an object takes in the repository: its zstd frame in a pack (the pack's
        one age header is shared), or its stored size alone from an authenticated index
        (version 3); None when no index tells."""
        place = self._locate().get(name)
        if place is not None:
            return place & FIELD_MASK
        return self.indexed_alone().get(name)

    def alone_size(self, name: str) -> int | None:
        """The stored size an authenticated index gives an object stored alone."""
        return self._alone_sizes.get(name)

    def indexed_alone(self) -> dict[str, int]:
        """Every object stored alone that an authenticated index names, and its size."""
        self.known_objects()
        return self._alone_sizes

    def places_of(self, names: Collection[str]) -> dict[str, tuple[str, int, int]]:
        """(pack ID, offset, length) of those of `names` that are packed, for a reader of a
        few objects (`dump` of one file): every index is read, but only one that names one
        of them is parsed, and no place of the others is kept (building every place takes a
        second at 200,000 files). An index that does not authenticate is passed over."""
        from concurrent.futures import ThreadPoolExecutor

        wanted = set(names)
        keys = [k for k in self.store.list("index") if OBJECT_NAME.fullmatch(k.rsplit("/", 1)[1])]

        def get(key: str) -> bytes | None:
            with contextlib.suppress(NotFound):
                return self.store.get(key)
            return None

        places: dict[str, tuple[str, int, int]] = {}
        with ThreadPoolExecutor(8) as pool:  # S3: one GET per index, in parallel
            for key, data in zip(keys, pool.map(get, keys), strict=True):
                if data is None or not any(n.encode() in data for n in wanted - places.keys()):
                    continue
                index_id = key.rsplit("/", 1)[1]
                try:
                    document = self._index_document(key, data)
                    blobs = [] if "objects" in document else parse_index(document, index_id)
                except (ValueError, KeyError, TypeError, RepositoryError):
                    continue  # `verify` names it; the object may be found elsewhere
                for name, offset, length in blobs:
                    if name in wanted:
                        places[name] = (index_id, offset, length)
        return places
