"""Who can read a repository: recipients added and removed without a new repository.

Every file that is encrypted (manifests, packs, objects stored alone) gets a new age header
for the new recipients (odbox_backup.rewrap): its file key, unwrapped with the admin's
identity, wrapped again for each new recipient; the payload is kept byte for byte, nothing
is decompressed or encrypted again. Order (README, "Rotating recipients"), each step atomic,
so a kill at any moment leaves a repository every identity in both sets reads whole:

1. config.json with the new recipients (and its new MAC): the next run encrypts to them,
   even if the rest is interrupted (a leaked key gets nothing new);
2. each manifest written again under its ID, with a new MAC line (one PUT, or temp and
   rename);
3. each object stored alone written again under its name, then the index that names it with
   its new stored size;
4. each pack written again under a new ID with an index of its own (same offsets: they are
   in the decrypted pack), all flushed, then the old index, then the old pack deleted.

After a kill, `recipients rewrap` (config.json already names the new set) does it all
again: a header rewrapped twice is as good as once.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from odbox_backup.codec import AGE_MAGIC
from odbox_backup.indexes import OBJECT_NAME, parse_index, parse_objects_index
from odbox_backup.repository import CONFIG, Config, Repository, RepositoryError, config_body
from odbox_backup.rewrap import NotWrapped, Unwrapper, rewrap
from odbox_backup.store import LocalStore, NotFound, refuse_unless_deletable
from odbox_common.age import parse_recipient, recipient_lines
from odbox_common.errors import UsageError

THREADS = 8  # S3: a GET and a PUT per file, in parallel (each holds a file twice: 8 MiB packs)
LOCAL_THREADS = 2  # a folder: the disk is the limit, and memory stays under 100 MB
BATCH = 64  # packs rewritten before one flush and the deletion of the old ones


@dataclass
class Result:
    recipients: list[str]
    added: list[str]
    removed: list[str]
    snapshots: int = 0
    packs: int = 0
    objects: int = 0
    bytes_stored: int = 0  # every encrypted file's stored size, before
    bytes_written: int = 0  # what was written again (the whole file: see README)
    header_bytes: int = 0  # of which new age headers
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def new_recipients(current: Sequence[str], add: Sequence[str], remove: Sequence[str]) -> list[str]:
    """The recipient set after adding `add` and removing `remove` (canonical spellings: an SSH
    key's comment dropped, so `ssh-ed25519 AAAA… me@laptop` removes `ssh-ed25519 AAAA…`)."""
    canon = [parse_recipient(r, "--add").canonical for r in recipient_lines(add)]
    gone = {parse_recipient(r, "--remove").canonical for r in recipient_lines(remove)}
    unknown = sorted(gone - set(current))
    if unknown:
        raise UsageError(
            f"not a recipient of this repository: {unknown[0]} (see `recipients list`; "
            "removed by a rotation that was interrupted? `recipients rewrap` finishes it)"
        )
    result = [r for r in current if r not in gone]
    result += [r for r in dict.fromkeys(canon) if r not in result]
    if not result:
        raise UsageError(
            "that would leave no recipient, and the snapshots unreadable by anyone: add the "
            "new recipient in the same command (--add)"
        )
    return result


def rekey(
    repo: Repository,
    identities: list[Unwrapper],
    recipients: list[str],
    say: Callable[[str], None] = lambda _: None,
) -> Result:
    """Rewrap every encrypted file of `repo` to `recipients` (the caller holds the prune lock:
    packs are deleted, as prune deletes them)."""
    started = time.monotonic()
    repo.require_writable()
    if not repo.config.encrypted:
        raise UsageError(
            f"{repo.store.url} is not encrypted: a header cannot be added to a file that has "
            "none; make an encrypted repository (`init --recipient`) and `copy all` into it"
        )
    if not identities:
        raise UsageError("rewrapping needs a key that reads the repository: pass --identity")
    old = list(repo.config.recipients)
    if not {i.recipient for i in identities} & set(old):
        raise UsageError(
            f"the identity given ({identities[0].recipient}) is not one of the repository's "
            "recipients (`recipients list`): pass one that is; nothing was changed"
        )
    result = Result(recipients, [r for r in recipients if r not in old],
                    [r for r in old if r not in recipients])  # fmt: skip
    refuse_unless_deletable(repo.store, "recipients")
    repo.known_objects()  # lists every index: packs, objects alone, damaged ones
    if repo.damaged_indexes:
        raise RepositoryError(
            f"{repo.damaged_indexes[0]} is damaged: run `odbox-backup repair index` first "
            "(its pack would look like a leftover); nothing was changed"
        )
    _check_identity(repo, identities)
    _write_config(repo, recipients)
    say(f"config.json: recipients are now {len(recipients)}")

    counting = threading.Lock()

    def again(key: str, blob: bytes) -> bytes:
        try:
            new = rewrap(blob, identities, recipients)
        except NotWrapped as e:
            raise RepositoryError(
                f"{key}: {e}: pass --identity with a key of one of its recipients (this "
                "rotation stopped here; run it again once fixed)"
            ) from e
        with counting:
            result.bytes_stored += len(blob)
            result.bytes_written += len(new)
            result.header_bytes += len(new) - (len(blob) - _header_length(blob))
            kind = key.split("/", 1)[0]
            if kind == "snapshots":
                result.snapshots += 1
            elif kind == "objects":
                result.objects += 1
            else:
                result.packs += 1
        return new

    _snapshots(repo, again, result)
    say(f"rewrapped {result.snapshots} manifests")
    _objects(repo, again, result)
    say(f"rewrapped {result.objects} objects stored alone")
    _packs(repo, again, result)
    say(f"rewrapped {result.packs} packs")
    repo.store.flush()
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _threads(repo: Repository) -> int:
    return LOCAL_THREADS if isinstance(repo.store, LocalStore) else THREADS


def _header_length(blob: bytes) -> int:
    from odbox_backup.rewrap import parse_header

    return parse_header(blob).end


def _check_identity(repo: Repository, identities: list[Unwrapper]) -> None:
    """Refuse before anything is written when the identity opens no file of the repository."""
    from odbox_backup.rewrap import file_key, parse_header

    keys = [f"snapshots/{i}" for i in repo.snapshot_ids()[-1:]]
    keys += [repo.pack_key(p) for p in sorted(repo.pack_sizes)[:1]]
    for key in keys:
        blob = repo.store.get(key)
        if key.startswith("snapshots/") and repo.auth is not None:
            blob = bytes(repo.auth.unwrap("snapshot", key.split("/")[1], blob, key))
        try:
            file_key(parse_header(blob), identities)
        except NotWrapped as e:
            raise UsageError(
                f"the identity given does not open {key} ({e}): pass a key of one of the "
                "repository's recipients (`recipients list`); nothing was changed"
            ) from e


def _write_config(repo: Repository, recipients: list[str]) -> None:
    assert repo.auth is not None
    document = json.loads(repo.store.get(CONFIG))
    document["recipients"] = list(recipients)
    document.pop("mac", None)
    document["mac"] = repo.auth.mac("config", "", config_body(document))
    repo.store.put(CONFIG, (json.dumps(document, indent=2) + "\n").encode(), replace=True)
    c = repo.config
    repo.config = Config(c.id, c.created, tuple(recipients), c.chunking, c.compression_level,
                         c.version, c.packing, c.key_check)  # fmt: skip


def _snapshots(repo: Repository, again: Callable[[str, bytes], bytes], result: Result) -> None:
    assert repo.auth is not None
    auth = repo.auth

    def one(snapshot_id: str) -> None:
        key = f"snapshots/{snapshot_id}"
        body = bytes(auth.unwrap("snapshot", snapshot_id, repo.store.get(key), key))
        if not body.startswith(AGE_MAGIC):
            return  # written before the repository had recipients? never so: init sets them
        repo.store.put(key, auth.wrap("snapshot", snapshot_id, again(key, body)), replace=True)

    with ThreadPoolExecutor(_threads(repo)) as pool:
        list(pool.map(one, repo.snapshot_ids()))


def _objects(repo: Repository, again: Callable[[str, bytes], bytes], result: Result) -> None:
    """Each object alone again under its name; then each index of objects alone with the new
    sizes (replaced in one PUT), the index after its objects."""
    assert repo.auth is not None
    auth = repo.auth
    names = sorted(key.rsplit("/", 1)[1] for key in repo.store.list("objects"))
    sizes: dict[str, int] = {}

    def one(name: str) -> None:
        key = repo.object_key(name)
        try:
            blob = repo.store.get(key)
        except NotFound:
            return
        if not blob.startswith(AGE_MAGIC):
            return
        new = again(key, blob)
        repo.store.put(key, new, sync=False, replace=True)
        sizes[name] = len(new)

    with ThreadPoolExecutor(_threads(repo)) as pool:
        list(pool.map(one, [n for n in names if OBJECT_NAME.fullmatch(n)]))
    repo.store.flush()
    for key in list(repo.object_indexes):
        index_id = key.rsplit("/", 1)[1]
        entries = parse_objects_index(repo._index_document(key), key)
        body = json.dumps({"objects": [[n, sizes.get(n, s)] for n, s in entries]}).encode()
        repo.store.put(key, auth.wrap("index", index_id, body), sync=False, replace=True)
    repo.store.flush()


def _packs(repo: Repository, again: Callable[[str, bytes], bytes], result: Result) -> None:
    """Each pack under a new ID, then its index; after each batch is flushed, the old index
    and then the old pack are deleted (a kill in between leaves the objects in two packs, which
    readers allow, or a new pack without an index, which the next prune or rekey deletes)."""
    assert repo.auth is not None
    auth = repo.auth
    for orphan in repo.orphan_packs:  # a killed run's, prune's or rekey's leftover
        repo.store.delete(repo.pack_key(orphan))

    def one(pack_id: str) -> None:
        index = repo._index_document(repo.index_key(pack_id))
        blobs = parse_index(index, pack_id)
        new = again(repo.pack_key(pack_id), repo.store.get(repo.pack_key(pack_id)))
        new_id = secrets.token_hex(32)
        repo.store.put(repo.pack_key(new_id), new, sync=False)
        document = {"pack": new_id, "size": len(new),
                    "blobs": [[n, o, length] for n, o, length in blobs]}  # fmt: skip
        body = auth.wrap("index", new_id, json.dumps(document).encode())
        repo.store.put(repo.index_key(new_id), body, sync=False)

    packs = sorted(repo.pack_sizes)
    with ThreadPoolExecutor(_threads(repo)) as pool:
        for start in range(0, len(packs), BATCH):
            batch = packs[start : start + BATCH]
            list(pool.map(one, batch))
            repo.store.flush()  # the new packs and indexes are durable before the old go
            for pack_id in batch:
                repo.store.delete(repo.index_key(pack_id))
                repo.store.delete(repo.pack_key(pack_id))
