"""Writing what a repository stores (FORMAT.md, "Packs"): an object alone, or small ones
packed (one age file and one write for hundreds of files), each pack followed by its
index; reading an object back, checked against its name; repacking for prune. Restic's
`internal/pack` is the model. What is stored, and where, is indexes.py's.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from odbox_backup.codec import Authenticator, Codec, CorruptObject, RepositoryError
from odbox_backup.indexes import PACK_SHIFT, Indexes, place_as_int, place_from_int
from odbox_backup.store import Exists, NotFound, Store

if TYPE_CHECKING:
    from odbox_backup.repository import Config

# A pack is also closed at this many objects: its index and the writer's list of what it
# holds stay small however tiny the files (a writer's choice, not in config.json).
PACK_OBJECTS = 1024


class Packs(Indexes):
    """The writing and reading half of a `Repository`, over its `Indexes`."""

    def __init__(
        self, store: Store, config: Config, codec: Codec, auth: Authenticator | None
    ) -> None:
        super().__init__(store, config, codec, auth)
        # The pack being filled, and the last pack read (sorted reads read each pack once).
        self._filling = threading.Lock()
        self._frames: list[bytes] = []
        self._blobs: list[tuple[str, int, int]] = []
        self._filled = 0
        self._reading = threading.Lock()
        self._last_pack: tuple[str, bytes | RepositoryError] | None = None
        # Version 3: objects stored alone since the last flush wait here for their index.
        self._alone_pending: list[tuple[str, int]] = []

    def require_writable(self) -> None:
        """Refuse to write into a repository whose files are not authenticated."""
        if self.auth is None:
            raise RepositoryError(
                f"{self.store.url} is a version {self.config.version} repository, whose files "
                "are not authenticated: odbox-backup reads it but no longer writes into it; "
                "make a new one with `odbox-backup init` and `copy all` into it"
            )

    def put_object(self, content: bytes, *, small_file: bool = False) -> tuple[str, bool]:
        """Store `content` unless it is there; its name, and whether it was new. A
        `small_file` (a whole file's content) under `packing.below` bytes goes into a pack."""
        name = hashlib.sha256(content).hexdigest()
        known = self.known_objects()
        unsynced = self.unsynced_objects()
        if name in known and name not in unsynced:
            return name, False
        if self.auth is None:
            self.require_writable()
        packing = self.config.packing
        if small_file and packing is not None and len(content) < packing["below"]:
            self._add_to_pack(name, self.codec.compress(content))
        else:
            self._put_alone(name, self.codec.compress(content))
        known.add(name)
        unsynced.discard(name)
        return name, True

    def put_frame(self, name: str, frame: bytes) -> bool:
        """Store, alone, an object given as its name (the SHA-256 of its content, which the
        caller hashed as it made it) and its zstd frame, made as a stream so the content was
        never whole in memory (`attachments.store_names`); whether it was new. A reader
        checks the content against the name as for any object."""
        if name in self.known_objects() and name not in self.unsynced_objects():
            return False
        self.require_writable()
        self._put_alone(name, frame)
        self.known_objects().add(name)
        self.unsynced_objects().discard(name)
        return True

    def _put_alone(self, name: str, frame: bytes) -> None:
        """An object's zstd frame, sealed, into its own file; into a pack instead when one no
        index names is there (a killed run's, or planted) and S3 may not overwrite it
        (create-only): what is found is never trusted as is."""
        with self.codec.sealed(frame) as blob:
            try:
                self.store.put(self.object_key(name), blob, sync=False)
            except Exists:
                stored = None
            else:
                stored = len(blob)
        if stored is None:
            self._add_to_pack(name, frame)
        else:
            with self._filling:
                self._alone_pending.append((name, stored))

    def repack(self, names: Sequence[str]) -> None:
        """Write these packed objects into new packs (prune's, for packs partly unused);
        `flush` before the old packs are deleted."""
        for name in sorted(names, key=self.read_order):
            self._add_to_pack(name, self.codec.compress(self.get_object(name)))

    def _add_to_pack(self, name: str, frame: bytes) -> None:
        assert self.config.packing is not None
        with self._filling:
            self._blobs.append((name, self._filled, len(frame)))
            self._frames.append(frame)
            self._filled += len(frame)
            if self._filled < self.config.packing["target"] and len(self._blobs) < PACK_OBJECTS:
                return
            frames, blobs = self._take_pack()
        self._write_pack(frames, blobs)

    def _take_pack(self) -> tuple[list[bytes], list[tuple[str, int, int]]]:
        frames, blobs = self._frames, self._blobs
        self._frames, self._blobs, self._filled = [], [], 0
        return frames, blobs

    def flush(self) -> None:
        """Write the pack being filled, if any, then make every write so far durable (before
        a manifest, or a journal line, that names what was written). The seal buffers go:
        a manifest, the peak of a run's memory, comes next."""
        with self._filling:
            frames, blobs = self._take_pack()
            alone, self._alone_pending = self._alone_pending, []
        if blobs:
            self._write_pack(frames, blobs)
        self.codec.drop_buffers()
        if alone:
            self.write_objects_index(alone)
        self.store.flush()

    def write_objects_index(self, entries: Sequence[tuple[str, int]]) -> str:
        """An authenticated index of objects stored alone, (name, stored size) each: what
        makes them count for dedup (version 3). Its key."""
        assert self.auth is not None
        index_id = secrets.token_hex(32)
        body = json.dumps({"objects": [[n, size] for n, size in entries]}).encode()
        key = self.index_key(index_id)
        self.store.put(key, self.auth.wrap("index", index_id, body), sync=False)
        self.object_indexes.append(key)
        for name, size in entries:
            self._alone_sizes[name] = size
        return key

    def _write_pack(self, frames: list[bytes], blobs: list[tuple[str, int, int]]) -> None:
        """The pack, then its index: a pack without one is a leftover nobody reads."""
        pack_id = secrets.token_hex(32)
        joined = b"".join(frames)
        frames.clear()  # before the encryption: two copies of the pack at a time, not three
        self.require_writable()
        assert self.auth is not None
        with self.codec.sealed(joined) as data:
            self.store.put(self.pack_key(pack_id), data, sync=False)
            size = len(data)
        del joined
        index = {"pack": pack_id, "size": size,
                 "blobs": [[n, o, length] for n, o, length in blobs]}  # fmt: skip
        self.pack_sizes[pack_id] = size
        body = self.auth.wrap("index", pack_id, json.dumps(index).encode())
        self.store.put(self.index_key(pack_id), body, sync=False)
        with self._listing:
            if self._where is not None:  # else read from the indexes when first needed
                pack_no = self._pack_no(pack_id)
                for name, offset, length in blobs:
                    self._where[name] = place_as_int(pack_no, offset, length)
            if self._packs is not None:
                self._packs[pack_id] = [name for name, _, _ in blobs]

    def delete_pack(self, pack_id: str) -> None:
        """Its index first: killed in between, the pack is a leftover the next prune deletes.
        Its objects are no longer known unless stored elsewhere (as `repack` does first)."""
        where = self._locate()
        names = self.packs().get(pack_id, [])
        self.store.delete(self.index_key(pack_id))
        self.store.delete(self.pack_key(pack_id))
        with self._listing:
            assert self._packs is not None
            del self._packs[pack_id]
            pack_no = self._pack_nos.get(pack_id)
            for name in names:
                place = where.get(name)
                if place is not None and place >> PACK_SHIFT == pack_no:
                    del where[name]
                    if self._known is not None:
                        self._known.discard(name)

    def get_object(
        self, name: str, place: tuple[str, int, int] | None = None, *, located: bool = False
    ) -> bytes:
        """An object's content, checked against its name. `located`: `place` is what
        `places_of` found (None: stored alone); else the indexes are read into places for
        every object, once."""
        what = f"object {name[:12]}…"
        if not located and (packed := self._locate().get(name)) is not None:
            pack_no, offset, length = place_from_int(packed)
            place = self._pack_ids[pack_no], offset, length
        if place is not None:
            pack_id, offset, length = place
            data = self._pack_content(pack_id)
            content = self.codec.decompress(memoryview(data)[offset : offset + length], what)
        else:
            try:
                blob = self.store.get(self.object_key(name))
            except NotFound as e:
                raise CorruptObject(f"{what} is missing from {self.store.url}") from e
            content = self.codec.decode(blob, what)
        if hashlib.sha256(content).hexdigest() != name:
            raise CorruptObject(f"{what} is damaged: its content does not match its name")
        return content

    def _pack_content(self, pack_id: str) -> bytes:
        """A pack's zstd frames, decrypted; the last pack read is kept (and so is why it
        could not be read, so a damaged pack is not read again for each of its objects)."""
        with self._reading:
            last = self._last_pack
            if last is None or last[0] != pack_id:
                self._last_pack = None  # one pack in memory at a time
                what = f"pack {pack_id[:12]}…"
                value: bytes | RepositoryError
                try:
                    value = self.codec.unseal(self.store.get(self.pack_key(pack_id)), what)
                except NotFound:
                    value = CorruptObject(f"{what} is missing from {self.store.url}")
                except RepositoryError as e:
                    value = e
                last = self._last_pack = (pack_id, value)
        if isinstance(last[1], RepositoryError):
            raise last[1]
        return last[1]

    def chunker(self) -> Any:
        from pyfastcdc import FastCDC

        c = self.config.chunking
        return FastCDC(int(c["avg"]), min_size=int(c["min"]), max_size=int(c["max"]))
