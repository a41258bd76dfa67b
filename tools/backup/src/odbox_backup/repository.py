"""A repository as FORMAT.md describes it: config, content-addressed objects, snapshot manifests.

Objects and manifests are `zstd(content)`, then age-encrypted to the
repository's recipients when it has any. An object's name is the SHA-256 of
its content, checked on every read.

Version 2 stores a small file's content in a pack with many others: one age
file and one write for hundreds of files, where version 1 made an age header
(a new X25519 key, as age requires of every file) and a file in the repository
for each. Each pack has a plain index (names, offsets, lengths) that a box
without the key can read to know what is stored.
"""

from __future__ import annotations

import array
import contextlib
import datetime as dt
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from odbox_backup.store import Exists, LocalStore, NotFound, Store
from odbox_common.age import parse_recipients, recipient_lines
from odbox_common.errors import ToolError, UsageError

FORMAT = "odbox-backup"
VERSION = 3
READS = (1, 2, 3)  # versions 1 and 2 (not authenticated) are read, never written
AUTHENTICATED = 3  # the first version whose config, manifests and indexes carry a MAC
CONFIG = "config.json"
AGE_MAGIC = b"age-encryption.org/v1\n"
ZSTD_LEVEL = 3
CHUNKING = {"algorithm": "fastcdc2020", "min": 256 << 10, "avg": 1 << 20, "max": 4 << 20}
# Whole files under `below` bytes go into packs, closed at `target` bytes of zstd frames
# (restic's default pack is 16 MiB; half that keeps a restore's memory low: it holds one).
PACKING = {"below": 1 << 20, "target": 8 << 20}
# A pack is also closed at this many objects: its index and the writer's list of what it
# holds stay small however tiny the files (a writer's choice, not in config.json).
PACK_OBJECTS = 1024
SNAPSHOT_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")
OBJECT_NAME = re.compile(r"[0-9a-f]{64}")
AUTH_KEY_ENV = "ODBOX_BACKUP_AUTH_KEY_FILE"
AUTH_KEY_LINE = re.compile(r"odbox-backup-auth-key-1:([0-9a-f]{64})")
AUTH_HEADER = b"odbox-auth-v1 "  # the first line of an authenticated file: this, the MAC, \n
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


class RepositoryError(ToolError):
    """The repository is missing, of another version, or damaged."""


class NoRepository(RepositoryError, UsageError):
    """Nothing at the place given: the command line's to fix (exit 2, as in every tool)."""


class CorruptObject(RepositoryError):
    """An object's bytes do not decode to content with its name's hash."""


class Unauthenticated(CorruptObject):
    """A manifest or index whose MAC does not match: forged, or damaged."""


class AuthKey:
    """The repository key (FORMAT.md, "Authentication"): 32 random bytes that the box and
    the admin hold and the repository does not. Every config, manifest and index carries
    an HMAC-SHA256 under a key derived from it and the repository's ID, so whoever can
    write to the bucket but lacks it cannot make a file odbox-backup accepts.

    A MAC, not a signature: the box must check what it reads as well as sign what it writes
    (a planted index must not stop it storing a file), so it holds the secret either way,
    and an HMAC costs microseconds where the files are hashed anyway."""

    def __init__(self, secret: bytes, source: str) -> None:
        self.secret, self.source = secret, source

    @classmethod
    def generate(cls, source: str) -> AuthKey:
        return cls(secrets.token_bytes(32), source)

    def text(self) -> str:
        return (
            "# odbox-backup authentication key: keep a copy with the admin's identity (the\n"
            "# vault), never in the repository; every command that reads or writes needs it.\n"
            f"odbox-backup-auth-key-1:{self.secret.hex()}\n"
        )

    @classmethod
    def parse(cls, text: str, source: str) -> AuthKey:
        keys = [m[1] for line in text.splitlines() if (m := AUTH_KEY_LINE.fullmatch(line.strip()))]
        if len(keys) != 1:
            raise UsageError(
                f"{source} is not an odbox-backup authentication key (one line "
                "odbox-backup-auth-key-1:<64 hex digits>, as `odbox-backup init` writes)"
            )
        return cls(bytes.fromhex(keys[0]), source)

    @classmethod
    def load(cls, path: Path) -> AuthKey:
        try:
            return cls.parse(path.read_text(), str(path))
        except OSError as e:
            raise UsageError(f"cannot read the authentication key {path}: {e.strerror}") from e

    @classmethod
    def from_env(cls) -> AuthKey | None:
        """The key named by ODBOX_BACKUP_AUTH_KEY_FILE (the box's configuration), if set."""
        path = os.environ.get(AUTH_KEY_ENV)
        return cls.load(Path(path)) if path else None

    def for_repository(self, repository_id: str) -> Authenticator:
        derived = hmac.new(self.secret, b"odbox-backup repository " + repository_id.encode(),
                           hashlib.sha256).digest()  # fmt: skip
        return Authenticator(derived)


class Authenticator:
    """MACs under one repository's key: `kind\0name\0body`, so a file is authentic only
    as what it was written as (a manifest under its own ID, an index under its own)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def mac(self, kind: str, name: str, body: bytes | memoryview) -> str:
        h = hmac.new(self._key, f"{kind}\0{name}\0".encode(), hashlib.sha256)
        h.update(body)
        return h.hexdigest()

    def wrap(self, kind: str, name: str, body: bytes) -> bytes:
        """`body` behind its MAC line (so `tail -n +2 FILE` is the body)."""
        return AUTH_HEADER + self.mac(kind, name, body).encode() + b"\n" + body

    def unwrap(self, kind: str, name: str, data: bytes, what: str) -> memoryview:
        """The body of a file `wrap` made; Unauthenticated if it was not made so."""
        end = len(AUTH_HEADER) + 64
        view = memoryview(data)
        if not data.startswith(AUTH_HEADER) or data[end : end + 1] != b"\n":
            raise Unauthenticated(f"{what} is not authenticated (no MAC line): forged or damaged")
        body = view[end + 1 :]
        if not hmac.compare_digest(
            data[len(AUTH_HEADER) : end], self.mac(kind, name, body).encode()
        ):
            raise Unauthenticated(
                f"{what} is not authenticated (its MAC does not match): forged or damaged"
            )
        return body


@dataclass(frozen=True)
class Config:
    id: str
    created: str
    recipients: tuple[str, ...]
    chunking: dict[str, Any]
    compression_level: int = ZSTD_LEVEL
    version: int = VERSION
    packing: dict[str, int] | None = None  # None in version 1: every content is an object
    key_check: str | None = None  # version 3: the MAC of nothing, to tell a wrong key

    @property
    def encrypted(self) -> bool:
        return bool(self.recipients)

    @property
    def authenticated(self) -> bool:
        return self.version >= AUTHENTICATED

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "id": self.id,
            "created": self.created,
            "compression": "zstd",
            "compression_level": self.compression_level,
            "chunking": self.chunking,
            "recipients": list(self.recipients),
            **({"packing": self.packing} if self.packing is not None else {}),
            **(
                {"auth": {"algorithm": "hmac-sha256", "key_check": self.key_check}}
                if self.key_check is not None
                else {}
            ),
        }


def config_body(document: dict[str, Any]) -> bytes:
    """What config.json's `mac` covers: every other field, as canonical JSON."""
    rest = {k: v for k, v in document.items() if k != "mac"}
    return json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()


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
                or not 0 <= offset <= _MASK or not 0 < length <= _MASK):  # fmt: skip
            raise ValueError(f"index {pack_id[:12]}… holds a bad entry")
        blobs.append((name, offset, length))
    return blobs


# A packed object's place, as one int: pack number (an index into the packs read), offset
# and length. Offsets and lengths below 2**36 (64 GiB): `parse_index` refuses larger ones.
_FIELD = 36
_PACK_SHIFT = 2 * _FIELD
_MASK = (1 << _FIELD) - 1


def _place(pack_no: int, offset: int, length: int) -> int:
    return pack_no << _PACK_SHIFT | offset << _FIELD | length


def _unplace(place: int) -> tuple[int, int, int]:
    return place >> _PACK_SHIFT, place >> _FIELD & _MASK, place & _MASK


def new_snapshot_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def snapshot_time(snapshot_id: str) -> dt.datetime:
    return dt.datetime.strptime(snapshot_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


class Repository:
    def __init__(
        self,
        store: Store,
        config: Config,
        identities: Sequence[Any] = (),
        auth: Authenticator | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.identities = list(identities)
        self.auth = auth  # None only for a version 1 or 2 repository, read only
        self.warn: Callable[[str], None] = lambda _: None  # the command line's warnings
        self._recipients = parse_recipients(config.recipients)
        self._local = threading.local()  # zstd contexts are not safe to share between threads
        self._known: set[str] | None = None
        self._unsynced: set[str] | None = None
        self._listing = threading.Lock()  # the dump and the filestore threads both ask
        # Packs (version 2): where each packed blob is (one int, `_place`), each pack's
        # blobs (built for prune only), the pack being filled, and the last pack read
        # (sorted reads read each pack once). Read only when an object is read: a run, which
        # only writes, never holds them. A restore of 200,000 files holds a place for each.
        self._where: dict[str, int] | None = None
        self._pack_ids: list[str] = []
        self._pack_nos: dict[str, int] = {}
        self._packs: dict[str, list[str]] | None = None
        self.orphan_packs: list[str] = []  # packs without an index: a killed run's
        self.damaged_indexes: list[str] = []
        self.index_problems: dict[str, str] = {}  # why each damaged index is
        self._filling = threading.Lock()
        self._frames: list[bytes] = []
        self._blobs: list[tuple[str, int, int]] = []
        self._filled = 0
        self._reading = threading.Lock()
        self._last_pack: tuple[str, bytes | RepositoryError] | None = None
        # Version 3: objects stored alone are trusted for dedup only when an authenticated
        # index names them (`index/<ID>` of kind "objects"); those written since the last
        # flush wait here for theirs. Their stored sizes, and which indexes are of that kind.
        self._alone_pending: list[tuple[str, int]] = []
        self._alone_sizes: dict[str, int] = {}
        self.object_indexes: list[str] = []
        self.pack_sizes: dict[str, int] = {}  # version 3: each indexed pack's stored size
        self.missing_packs: list[str] = []  # indexes whose pack is gone (version 3)
        # Objects alone no authenticated index names (version 3): a killed run's, or planted.
        # Never trusted; prune deletes those no snapshot names.
        self.unindexed: set[str] = set()
        self.shadowed: set[str] = set()
        self._blob: tuple[str, bytes] | None = None  # the last manifest checked, not yet read

    # ------------------------------------------------------------ opening

    @classmethod
    def init(
        cls, store: Store, recipients: Sequence[str] = (), key: AuthKey | None = None
    ) -> Repository:
        """A new repository at `store`, authenticated under `key` (else the one
        ODBOX_BACKUP_AUTH_KEY_FILE names)."""
        key = key or AuthKey.from_env()
        if key is None:
            raise UsageError(f"a new repository needs an authentication key ({AUTH_KEY_ENV})")
        recipients = cls.check_new(store, recipients)
        repository_id = secrets.token_hex(16)
        auth = key.for_repository(repository_id)
        config = Config(
            id=repository_id,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            recipients=tuple(recipients),
            chunking=dict(CHUNKING),
            packing=dict(PACKING),
            key_check=auth.mac("key-check", "", b""),
        )
        document = config.to_json()
        document["mac"] = auth.mac("config", "", config_body(document))
        store.put(CONFIG, (json.dumps(document, indent=2) + "\n").encode())
        return cls(store, config, (), auth)

    @staticmethod
    def check_new(store: Store, recipients: Sequence[str]) -> list[str]:
        """Refuse, before anything is written, what `init` would refuse; the recipients."""
        recipients = recipient_lines(recipients)  # what is parsed is what is stored
        parse_recipients(recipients)
        if store.exists(CONFIG):
            raise RepositoryError(f"{store.url} is already a repository; nothing was changed")
        if any(True for _ in store.list("")):
            raise RepositoryError(
                f"{store.url} is not empty: a repository is made only where nothing is"
            )
        return recipients

    @classmethod
    def open(
        cls, store: Store, identities: Sequence[Any] = (), key: AuthKey | None = None
    ) -> Repository:
        """The repository at `store`. `key`: the authentication key, else the one
        ODBOX_BACKUP_AUTH_KEY_FILE names. A version 3 repository needs it, and its
        config.json must carry its MAC (recipients swapped or emptied: refused); one of
        version 1 or 2 is read without it, never written, and refused when a key is given
        (an attacker's config.json of version 2 would otherwise undo the authentication)."""
        key = key or AuthKey.from_env()
        try:
            raw = store.get(CONFIG)
        except NotFound as e:
            raise NoRepository(
                f"no repository at {store.url}: create one with `odbox-backup init`"
            ) from e
        try:
            document = json.loads(raw)
            if document.get("format") != FORMAT:
                raise ValueError("not an odbox-backup repository")
        except (ValueError, AttributeError) as e:
            raise RepositoryError(f"{store.url}/{CONFIG} is damaged or foreign: {e}") from e
        version = document.get("version")
        if version not in READS:
            raise RepositoryError(
                f"{store.url} is a version {version} repository; this odbox-backup reads "
                f"versions {READS[0]} to {READS[-1]} only"
            )
        try:
            config = Config(
                id=str(document["id"]),
                created=str(document["created"]),
                recipients=tuple(document.get("recipients", [])),
                chunking=dict(document["chunking"]),
                compression_level=int(document.get("compression_level", ZSTD_LEVEL)),
                version=int(version),
                packing=(
                    {
                        "below": int(document["packing"]["below"]),
                        "target": int(document["packing"]["target"]),
                    }
                    if version >= 2
                    else None
                ),
                key_check=str(document["auth"]["key_check"]) if version >= AUTHENTICATED else None,
            )
            recipients = document.get("recipients", [])
            if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
                raise TypeError("recipients is not a list of strings")
        except (KeyError, TypeError, ValueError) as e:
            raise RepositoryError(f"{store.url}/{CONFIG} lacks a field: {e}") from e
        if not config.authenticated:
            if key is not None:
                raise RepositoryError(
                    f"{store.url} is a version {version} repository, whose files are not "
                    "authenticated, but an authentication key was given: refused (its "
                    "config.json may have been replaced). To read an old repository, run "
                    f"without --auth-key-file and {AUTH_KEY_ENV}"
                )
            return cls(store, config, identities)
        if key is None:
            raise UsageError(
                f"{store.url} is authenticated: pass --auth-key-file (or set {AUTH_KEY_ENV}) "
                "with the key `odbox-backup init` wrote"
            )
        auth = key.for_repository(config.id)
        if not hmac.compare_digest(auth.mac("key-check", "", b""), config.key_check or ""):
            raise RepositoryError(
                f"{key.source} is not the authentication key of {store.url} (or its "
                f"{CONFIG} was replaced): nothing was read or written"
            )
        if not hmac.compare_digest(auth.mac("config", "", config_body(document)),
                                   str(document.get("mac", ""))):  # fmt: skip
            raise Unauthenticated(
                f"{store.url}/{CONFIG} was changed since `init` (its MAC does not match: "
                "recipients swapped or emptied?): refused, nothing was read or written"
            )
        return cls(store, config, identities, auth)

    def require_writable(self) -> None:
        """Refuse to write into a repository whose files are not authenticated."""
        if self.auth is None:
            raise RepositoryError(
                f"{self.store.url} is a version {self.config.version} repository, whose files "
                "are not authenticated: odbox-backup reads it but no longer writes into it; "
                "make a new one with `odbox-backup init` and `copy all` into it"
            )

    # ------------------------------------------------------------ encoding

    def encode(self, content: bytes) -> bytes:
        return self._seal(self._compress(content))

    def _compress(self, content: bytes) -> bytes:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            level = self.config.compression_level
            compressor = self._local.compressor = zstandard.ZstdCompressor(level=level)
        return bytes(compressor.compress(content))

    def encode_json(self, document: Any) -> bytes:
        """`encode(json)` without the whole JSON text in memory: it is compressed as it is
        made (a manifest names an object per filestore file: tens of MB of JSON at 200,000)."""
        compressed = io.BytesIO()  # one buffer, not a list of parts and their join
        compressor = zstandard.ZstdCompressor(level=self.config.compression_level)
        writer = compressor.compressobj()
        pending: list[str] = []
        size = 0
        for piece in json_pieces(document):
            pending.append(piece)
            size += len(piece)
            if size >= 1 << 20:
                compressed.write(writer.compress("".join(pending).encode()))
                pending, size = [], 0
        compressed.write(writer.compress("".join(pending).encode()))
        compressed.write(writer.flush())
        frame = compressed.getvalue()  # the buffer itself, not a copy, once it is the only one
        del compressed
        return self._seal(frame)

    def _seal(self, frame: bytes) -> bytes:
        """`frame` encrypted to the recipients. `pyrage.encrypt_io` into a buffer, not
        `pyrage.encrypt`: that holds the output twice (Rust's, then Python's copy), which
        for an 8 MiB pack or a 12 MB manifest set the peak memory of a run."""
        if not self._recipients:
            return frame
        import pyrage

        sealed = io.BytesIO()
        pyrage.encrypt_io(io.BytesIO(frame), sealed, self._recipients)
        return sealed.getvalue()

    def decode(self, blob: bytes, what: str) -> bytes:
        return self._decompress(self._unseal(blob, what), what)

    def _unseal(self, blob: bytes, what: str) -> bytes:
        if blob.startswith(AGE_MAGIC):
            if not self.identities:
                raise RepositoryError(
                    f"{what} is encrypted: pass --identity with a key of one of the "
                    "repository's recipients"
                )
            import pyrage

            plain = io.BytesIO()  # `decrypt_io`, as `_seal` uses `encrypt_io`: one copy out
            try:
                pyrage.decrypt_io(io.BytesIO(blob), plain, self.identities)
                blob = plain.getvalue()
            except Exception as e:  # DecryptError; OSError for a damaged stream
                raise RepositoryError(
                    f"cannot decrypt {what}: the identity is not one of the repository's "
                    f"recipients, or the file is damaged ({e})"
                ) from e
        elif self._recipients:
            raise CorruptObject(f"{what} should be encrypted but is not: the repository is damaged")
        return blob

    def _decompress(self, blob: bytes | memoryview, what: str) -> bytes:
        try:
            decompressor = getattr(self._local, "decompressor", None)
            if decompressor is None:
                decompressor = self._local.decompressor = zstandard.ZstdDecompressor()
            if zstandard.frame_content_size(blob) < 0:  # written as a stream (a manifest)
                return bytes(decompressor.decompressobj().decompress(blob))
            return bytes(decompressor.decompress(blob))
        except zstandard.ZstdError as e:
            raise CorruptObject(f"{what} is damaged: {e}") from e

    # ------------------------------------------------------------ objects

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
                    where[name] = _place(pack_no, offset, length)
        self.orphan_packs = sorted(set(packs) - indexed)
        self.damaged_indexes = damaged

    def _pack_no(self, pack_id: str) -> int:
        """A small number for a pack ID, for `_place` (the caller holds `_listing`)."""
        number = self._pack_nos.get(pack_id)
        if number is None:
            number = self._pack_nos[pack_id] = len(self._pack_ids)
            self._pack_ids.append(pack_id)
        return number

    def _locate(self) -> dict[str, int]:
        """Where each packed object is, as `_place` makes it."""
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
                    packs.setdefault(self._pack_ids[where[name] >> _PACK_SHIFT], []).append(name)
                self._packs = packs
            return self._packs

    def location(self, name: str) -> tuple[str, int] | None:
        """(pack ID, offset) of a packed object, None for one stored alone."""
        place = self._locate().get(name)
        if place is None:
            return None
        pack_no, offset, _ = _unplace(place)
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
            return place & _MASK
        return self.indexed_alone().get(name)

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
            self._add_to_pack(name, self._compress(content))
        else:
            blob = self.encode(content)
            try:
                self.store.put(self.object_key(name), blob, sync=False)
            except Exists:
                # One no index names is there (a killed run's, or planted) and S3 may not
                # overwrite it (create-only): the content goes into a pack, never trusted as is.
                self._add_to_pack(name, self._compress(content))
                blob = b""
            if blob:
                with self._filling:
                    self._alone_pending.append((name, len(blob)))
        known.add(name)
        unsynced.discard(name)
        return name, True

    def repack(self, names: Sequence[str]) -> None:
        """Write these packed objects into new packs (prune's, for packs partly unused);
        `flush` before the old packs are deleted."""
        for name in sorted(names, key=self.read_order):
            self._add_to_pack(name, self._compress(self.get_object(name)))

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
        a manifest, or a journal line, that names what was written)."""
        with self._filling:
            frames, blobs = self._take_pack()
            alone, self._alone_pending = self._alone_pending, []
        if blobs:
            self._write_pack(frames, blobs)
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

    def alone_size(self, name: str) -> int | None:
        """The stored size an authenticated index gives an object stored alone."""
        return self._alone_sizes.get(name)

    def indexed_alone(self) -> dict[str, int]:
        """Every object stored alone that an authenticated index names, and its size."""
        self.known_objects()
        return self._alone_sizes

    def _write_pack(self, frames: list[bytes], blobs: list[tuple[str, int, int]]) -> None:
        """The pack, then its index: a pack without one is a leftover nobody reads."""
        pack_id = secrets.token_hex(32)
        joined = b"".join(frames)
        frames.clear()  # before the encryption: two copies of the pack at a time, not three
        data = self._seal(joined)
        del joined
        self.require_writable()
        assert self.auth is not None
        self.store.put(self.pack_key(pack_id), data, sync=False)
        index = {"pack": pack_id, "size": len(data),
                 "blobs": [[n, o, length] for n, o, length in blobs]}  # fmt: skip
        self.pack_sizes[pack_id] = len(data)
        del data
        body = self.auth.wrap("index", pack_id, json.dumps(index).encode())
        self.store.put(self.index_key(pack_id), body, sync=False)
        with self._listing:
            if self._where is not None:  # else read from the indexes when first needed
                pack_no = self._pack_no(pack_id)
                for name, offset, length in blobs:
                    self._where[name] = _place(pack_no, offset, length)
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
                if place is not None and place >> _PACK_SHIFT == pack_no:
                    del where[name]
                    if self._known is not None:
                        self._known.discard(name)

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

    def get_object(
        self, name: str, place: tuple[str, int, int] | None = None, *, located: bool = False
    ) -> bytes:
        """An object's content, checked against its name. `located`: `place` is what
        `places_of` found (None: stored alone); else the indexes are read into places for
        every object, once."""
        what = f"object {name[:12]}…"
        if not located and (packed := self._locate().get(name)) is not None:
            pack_no, offset, length = _unplace(packed)
            place = self._pack_ids[pack_no], offset, length
        if place is not None:
            pack_id, offset, length = place
            data = self._pack_content(pack_id)
            content = self._decompress(memoryview(data)[offset : offset + length], what)
        else:
            try:
                blob = self.store.get(self.object_key(name))
            except NotFound as e:
                raise CorruptObject(f"{what} is missing from {self.store.url}") from e
            content = self.decode(blob, what)
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
                    value = self._unseal(self.store.get(self.pack_key(pack_id)), what)
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

    # ------------------------------------------------------------ snapshots

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

    def write_snapshot(self, manifest: dict[str, Any]) -> None:
        snapshot_id = str(manifest["id"])
        self.require_writable()
        assert self.auth is not None
        blob = self.encode_json(manifest)
        self.flush()  # every object the manifest names is on disk before it is
        self.store.put(f"snapshots/{snapshot_id}", self.auth.wrap("snapshot", snapshot_id, blob))

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
            data = self.decode(blob, f"snapshot {snapshot_id}")
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
        blob = self.snapshot_blob(snapshot_id)
        self._blob = (snapshot_id, blob)
        what = f"snapshot {snapshot_id}"
        try:
            with zstandard.ZstdDecompressor().stream_reader(self._unseal(blob, what)) as reader:
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
                later.setdefault(place >> _PACK_SHIFT, array.array("I")).append(i)
        for pack_no in sorted(later):
            for i in later.pop(pack_no):
                item = files[i]
                yield json.loads(item) if isinstance(item, str) else item

    def objects_of(self, manifest: dict[str, Any]) -> Iterator[str]:
        yield from manifest["database"]["objects"]
        for entry in file_entries(manifest):
            yield from entry["objects"]
