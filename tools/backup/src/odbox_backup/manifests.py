"""Snapshot manifests (FORMAT.md, "Snapshots"): their IDs, the JSON of their entries,
how a manifest is written, read, authenticated and named by a prefix or `latest`.
Restic's `internal/restic/snapshot.go` is the model.
"""

from __future__ import annotations

import array
import datetime as dt
import json
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from odbox_backup.codec import Authenticator, Codec, CorruptObject, RepositoryError, Unauthenticated
from odbox_backup.indexes import PACK_SHIFT
from odbox_backup.packs import Packs
from odbox_backup.store import NotFound, Store
from odbox_common.errors import UsageError

if TYPE_CHECKING:
    from odbox_backup.repository import Config

SNAPSHOT_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")
# A snapshot whose ID is later than this after now was made by a wrong clock or forged: it
# is refused, and never delays the ID of the next one.
FUTURE = dt.timedelta(hours=1)
# How much of a manifest's JSON `snapshot_database` reads: its `database` part names the
# dump's chunks, 67 bytes each (a 50 GB database's fit).
MANIFEST_HEAD = 4 << 20


def _database_part(reader: Any) -> Any:
    """The `database` value at the start of a manifest's JSON read from `reader`, reading
    64 KB, then 4 times more while it is cut, up to MANIFEST_HEAD; None when the JSON does
    not start with it."""
    start, head, want = b'{"database":', b"", 64 << 10
    while True:
        more = reader.read(want - len(head))
        head += more
        if not head.startswith(start):
            return None
        try:  # a cut may split a character, after the part
            return json.JSONDecoder().raw_decode(head[len(start) :].decode(errors="ignore"))[0]
        except ValueError:
            if not more or want >= MANIFEST_HEAD:
                return None
            want *= 4


class JSONTexts(list[str]):
    """A JSON array held as the JSON text of each item: a manifest's `filestore.files`, one
    short string per file instead of a dict, a list, a path, a size and names (about 190
    bytes instead of 480 for each of hundreds of thousands of files)."""


ENTRY_START = '{"path":'  # how every `entry_text` starts: the path comes first


def entry_text(path: str, size: int, objects: Sequence[str]) -> str:
    """The JSON text of one `filestore.files` entry, path first: `{"path":…,"size":…,
    "objects":[…]}`. Path first, so texts sort as their paths do (for any name without
    characters JSON escapes, or below `"`: every name Odoo makes) and need no sort key."""
    return json.dumps({"path": path, "size": size, "objects": list(objects)},
                      separators=(",", ":"))  # fmt: skip


class _Compacter:
    """`json.loads`'s object hook for a manifest: each `filestore.files` entry becomes its
    JSON text, a plain `str` (a subclass of str, to mark them, costs a second allocation:
    48 bytes more per file). A file entry that was a string in the JSON, not an object, is
    still caught: `made` counts the texts made, and each starts as `entry_text` starts."""

    def __init__(self) -> None:
        self.made = 0

    def __call__(self, document: dict[str, Any]) -> Any:
        if document.keys() == {"path", "size", "objects"}:
            self.made += 1
            return entry_text(document["path"], document["size"], document["objects"])
        return document


def file_entries(manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The `filestore.files` entries of a manifest as dicts, one at a time, whether it holds
    them as dicts or as `JSONTexts`."""
    files = manifest["filestore"]["files"]
    if isinstance(files, JSONTexts):
        for text in files:
            yield json.loads(text)
    else:
        yield from files


def json_pieces(value: Any, batch: int = 2000) -> Iterator[str]:
    """`json.dumps(value, separators=(",", ":"), sort_keys=True)` in pieces, long lists a
    batch of items at a time: the same text, never whole in memory, and made by json's C
    encoder (`JSONEncoder.iterencode` is pure Python: seconds for a manifest of 200,000 files)."""
    if isinstance(value, JSONTexts):
        yield "["
        for start in range(0, len(value), batch):
            yield ("," if start else "") + ",".join(value[start : start + batch])
        yield "]"
    elif isinstance(value, dict):
        yield "{"
        for i, key in enumerate(sorted(value)):
            yield ("," if i else "") + json.dumps(str(key)) + ":"
            yield from json_pieces(value[key], batch)
        yield "}"
    elif isinstance(value, list | tuple) and len(value) > batch:
        yield "["
        for start in range(0, len(value), batch):
            text = json.dumps(value[start : start + batch], separators=(",", ":"), sort_keys=True)
            yield ("," if start else "") + text[1:-1]
        yield "]"
    else:
        yield json.dumps(value, separators=(",", ":"), sort_keys=True)


def new_snapshot_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def snapshot_time(snapshot_id: str) -> dt.datetime:
    return dt.datetime.strptime(snapshot_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


class Snapshots(Packs):
    """The manifest half of a `Repository`, over its `Packs`."""

    def __init__(
        self, store: Store, config: Config, codec: Codec, auth: Authenticator | None
    ) -> None:
        super().__init__(store, config, codec, auth)
        self._blob: tuple[str, bytes] | None = None  # the last manifest checked, not yet read
        self.warn: Callable[[str], None] = lambda _: None  # the command line's warnings

    def snapshot_ids(self) -> list[str]:
        ids = [k.rsplit("/", 1)[1] for k in self.store.list("snapshots")]
        return sorted(i for i in ids if SNAPSHOT_ID.fullmatch(i))

    def next_snapshot_id(self, now: dt.datetime | None = None) -> str:
        """A new ID that sorts after every existing one (IDs order snapshots; the caller holds
        the lock), never waiting: its second is now, or one after the latest ID when that is
        as late (two runs in one second). IDs later than FUTURE after now are ignored: a
        forged `2099…` ID must not hold every later run back (it is refused when read)."""
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        plausible = [i for i in self.snapshot_ids() if snapshot_time(i) <= now + FUTURE]
        if plausible and snapshot_time(plausible[-1]) >= now:
            now = snapshot_time(plausible[-1]) + dt.timedelta(seconds=1)
        return new_snapshot_id(now)

    def write_snapshot(self, manifest: dict[str, Any], *, replace: bool = False) -> None:
        """Store a manifest: a new one never overwrites (append-only S3 puts); `replace` is
        a tag change's rewrite of the same ID, which needs the right to overwrite."""
        snapshot_id = str(manifest["id"])
        self.require_writable()
        assert self.auth is not None
        # Every object the manifest names is on disk before it is; and flushed first, the
        # pack being filled and the seal buffers are gone before the manifest is made (the
        # peak of a run's memory: 192 MB of an encrypted run at 200,000 files, else 170).
        self.flush()
        blob = self.codec.encode_pieces(json_pieces(manifest))
        self.store.put(f"snapshots/{snapshot_id}", self.auth.wrap("snapshot", snapshot_id, blob),
                       replace=replace)  # fmt: skip

    def snapshot_blob(self, snapshot_id: str, *, future_ok: bool = False) -> bytes:
        """A manifest's stored bytes, its MAC checked (version 3) and its ID not in the
        future (unless `future_ok`: prune keeps what such a snapshot names): what can be
        told of a snapshot without its identity."""
        if not SNAPSHOT_ID.fullmatch(snapshot_id):
            raise UsageError(
                f"{snapshot_id!r} is not a snapshot ID (like 20261122T020000Z-1a2b3c4d)"
            )
        if not future_ok and snapshot_time(snapshot_id) > dt.datetime.now(dt.UTC) + FUTURE:
            raise Unauthenticated(
                f"snapshot {snapshot_id} is dated in the future: refused (forged, or made by "
                "a box whose clock was wrong)"
            )
        if self._blob is not None and self._blob[0] == snapshot_id:
            blob = self._blob[1]
            self._blob = None
            return blob
        try:
            blob = self.store.get(f"snapshots/{snapshot_id}")
        except NotFound as e:
            raise RepositoryError(
                f"no snapshot {snapshot_id} in {self.store.url} (see `odbox-backup list`)"
            ) from e
        if self.auth is not None:
            body = self.auth.unwrap("snapshot", snapshot_id, blob, f"snapshot {snapshot_id}")
            del blob  # the stored bytes go as soon as their body is copied out
            blob = bytes(body)
        return blob

    def check_snapshot(self, snapshot_id: str) -> None:
        """Raise unless the snapshot is authentic (and not dated in the future); its bytes are
        kept for the `read_snapshot` that usually follows."""
        if self._blob is not None and self._blob[0] != snapshot_id:
            self._blob = None  # the bytes of the one checked before go first
        self._blob = (snapshot_id, self.snapshot_blob(snapshot_id))

    def read_snapshot(
        self, snapshot_id: str, *, compact: bool = True, future_ok: bool = False
    ) -> dict[str, Any]:
        """A manifest; with `compact`, its `filestore.files` as `JSONTexts` (read them with
        `file_entries`), so a snapshot of hundreds of thousands of files stays small."""
        blob = self.snapshot_blob(snapshot_id, future_ok=future_ok)
        try:
            # One copy at a time: the stored bytes, the JSON bytes, the text (tens of MB each
            # for a snapshot of 200,000 files), each dropped once the next exists.
            data = self.codec.decode(blob, f"snapshot {snapshot_id}")
            del blob
            text = data.decode()
            del data
            compacter = _Compacter()
            manifest = json.loads(text, object_hook=compacter if compact else None)
            del text
            if not isinstance(manifest, dict) or manifest.get("id") != snapshot_id:
                raise ValueError("its id does not match its name")
            if compact:
                files = manifest["filestore"]["files"]
                if compacter.made < len(files) or not all(
                    type(f) is str and f.startswith(ENTRY_START) for f in files
                ):
                    raise ValueError("an entry of filestore.files lacks path, size or objects")
                manifest["filestore"]["files"] = JSONTexts(files)
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptObject(f"snapshot {snapshot_id} is damaged: {e}") from e
        return manifest

    def snapshot_database(self, snapshot_id: str) -> str:
        """The name of the database a snapshot holds, its MAC checked, without building its
        manifest: `restore latest` asks it of every snapshot until one names the database,
        and two manifests of 200,000 files read for that set a restore's peak memory. A
        manifest is written with sorted keys, so `database` comes first: only the start of
        the JSON is decompressed and parsed (any other shape is read whole). The stored
        bytes are kept for the `read_snapshot` that usually follows, as `check_snapshot`
        keeps them."""
        import zstandard

        blob = self.snapshot_blob(snapshot_id)
        self._blob = (snapshot_id, blob)
        what = f"snapshot {snapshot_id}"
        try:
            with zstandard.ZstdDecompressor().stream_reader(
                self.codec.unseal(blob, what)
            ) as reader:
                part = _database_part(reader)
            if isinstance(part, dict) and isinstance(part.get("name"), str):
                return str(part["name"])
        except zstandard.ZstdError:
            pass  # damage: the whole read says what
        self._blob = (snapshot_id, blob)
        name = self.read_snapshot(snapshot_id)["database"]["name"]
        self._blob = (snapshot_id, blob)
        if not isinstance(name, str):
            raise CorruptObject(f"snapshot {snapshot_id} is damaged: its database has no name")
        return name

    def newest(self, database: str | None = None) -> str | None:
        """The newest snapshot that is authentic and not dated in the future (of `database`,
        when given: that needs reading the manifests); the others are passed over with a
        warning (`self.warn`)."""
        for snapshot_id in reversed(self.snapshot_ids()):
            try:
                self.check_snapshot(snapshot_id)
                if database is not None and self.snapshot_database(snapshot_id) != database:
                    continue
            except Unauthenticated as e:
                self.warn(f"passed over {e}")
                continue
            return snapshot_id
        return None

    def resolve(self, ref: str, database: str | None = None) -> str:
        """A snapshot ID from an ID, a unique prefix of one, or `latest`: the newest authentic
        one; of `database` when given and the repository holds one of it (else the newest of
        all, with a warning naming its database: a restore into a new name)."""
        ids = self.snapshot_ids()
        if ref == "latest":
            found = self.newest(database)
            if found is None and database is not None:
                found = self.newest()
                if found is not None:
                    other = self.snapshot_database(found)
                    self.warn(f"no snapshot of database {database} in {self.store.url}: "
                              f"latest is {found}, of database {other}")  # fmt: skip
            if found is None:
                raise RepositoryError(f"{self.store.url} holds no snapshot yet")
            return found
        matches = [i for i in ids if i.startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UsageError(f"no snapshot {ref} in {self.store.url} (see `odbox-backup list`)")
        raise UsageError(f"{ref} matches {len(matches)} snapshots: give more of the ID")

    def files_in_read_order(self, manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """A manifest's `filestore.files` entries, those of one packed object last and
        grouped by pack: each pack is read once (and is whole in memory while its files are
        written, so their order within it does not matter). Memory: 4 bytes per file."""
        files = manifest["filestore"]["files"]
        where = self._locate()
        later: dict[int, array.array[int]] = {}
        for i, entry in enumerate(file_entries(manifest)):
            place = where.get(entry["objects"][0]) if len(entry["objects"]) == 1 else None
            if place is None:
                yield entry
            else:
                later.setdefault(place >> PACK_SHIFT, array.array("I")).append(i)
        for pack_no in sorted(later):
            for i in later.pop(pack_no):
                item = files[i]
                yield json.loads(item) if isinstance(item, str) else item

    def objects_of(self, manifest: dict[str, Any]) -> Iterator[str]:
        yield from manifest["database"]["objects"]
        if "names" in manifest["filestore"]:  # attachments.py's; absent in older snapshots
            yield manifest["filestore"]["names"]["object"]
        for entry in file_entries(manifest):
            yield from entry["objects"]
