"""One file back: `ls ID [PATH]`, `dump ID PATH`, `restore ID --only PATH…`.

Finding one file must not cost what a restore costs. A manifest of 200,000
files is tens of MB of JSON; parsing it whole takes seconds. So the manifest
is decrypted, decompressed and checked as always (its MAC), then its text is
searched for the entries wanted: every entry starts `{"path":<path as
json.dumps writes it>,` (`repository.entry_text`), and only those are parsed.
No other string in a manifest can hold `{"path":"` unescaped (JSON escapes a
quote inside a string), so the search finds entries and nothing else.

The attachments' names are attachments.py's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from odbox_backup.manifests import ENTRY_START, JSONTexts, entry_text, json_pieces
from odbox_backup.repository import Repository, RepositoryError
from odbox_common.errors import ToolError, UsageError
from odbox_common.files import fsync_dir

if TYPE_CHECKING:
    from odbox_backup.attachments import Attachment

_DECODER = json.JSONDecoder()


@dataclass
class Entry:
    path: str
    size: int
    objects: list[str]
    attachments: list[Attachment] = field(default_factory=list)

    def to_json(self, names: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size}
        if names:
            out["attachments"] = [vars(a) for a in self.attachments]
        return out


def manifest_text(repo: Repository, snapshot_id: str) -> str:
    """A manifest's JSON text, authenticated (its MAC) and decrypted, not parsed."""
    blob = repo.snapshot_blob(snapshot_id)
    text = repo.codec.decode(blob, f"snapshot {snapshot_id}").decode()
    if ENTRY_START not in text and '"files":[{' in text:
        # An import before this version wrote its entries with sorted keys, path not first:
        # written again as a run writes them (once per command; imports are few).
        manifest = json.loads(text)
        manifest["filestore"]["files"] = JSONTexts(
            entry_text(f["path"], f["size"], f["objects"]) for f in manifest["filestore"]["files"]
        )
        text = "".join(json_pieces(manifest))
    return text


def _normal(path: str) -> str:
    parts = [p for p in path.strip().split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"{path!r}: a path inside the filestore has no '..'")
    return "/".join(parts)


def _entry_at(text: str, at: int) -> Entry:
    document, _ = _DECODER.raw_decode(text, at)
    return Entry(str(document["path"]), int(document["size"]), list(document["objects"]))


def find_entries(text: str, path: str = "") -> Iterator[Entry]:
    """The filestore entries of a manifest's text that are `path` or under `path/` (every one
    for ""), in the manifest's order."""
    path = _normal(path)
    if path:
        exact = ENTRY_START + json.dumps(path) + ","
        at = text.find(exact)
        if at >= 0:
            yield _entry_at(text, at)
        needle = ENTRY_START + json.dumps(path + "/")[:-1]
    else:
        needle = ENTRY_START + '"'
    at = text.find(needle)
    while at >= 0:
        yield _entry_at(text, at)
        at = text.find(needle, at + len(needle))


def one_entry(text: str, path: str, snapshot_id: str) -> Entry:
    wanted = _normal(path)
    exact = ENTRY_START + json.dumps(wanted) + ","
    at = text.find(exact)
    if at < 0:
        raise RepositoryError(
            f"snapshot {snapshot_id} holds no file {wanted!r} in its filestore "
            f"(see `odbox-backup ls {snapshot_id}`)"
        )
    return _entry_at(text, at)


def fetch(repo: Repository, names: Sequence[str], alone: bool) -> Iterator[bytes]:
    """The contents of a few objects, in order, each checked against its name, without every
    index read into places (a second at 200,000 files). `alone`: they are most likely stored
    alone (dump chunks, a large file's chunks), so each is looked for there first; the others
    are found through the indexes that name them (`places_of`)."""
    places: dict[str, tuple[str, int, int]] | None = None
    for name in names:
        if alone and repo.store.exists(repo.object_key(name)):
            yield repo.get_object(name, None, located=True)
            continue
        if places is None:
            places = repo.places_of(names)
        yield repo.get_object(name, places.get(name), located=True)


def write_content(repo: Repository, entry: Entry, out: IO[bytes]) -> str:
    """The file's content into `out`, object after object (each checked against its name);
    its SHA-256."""
    digest = hashlib.sha256()
    below = (repo.config.packing or {}).get("below", 0)
    for content in fetch(repo, entry.objects, alone=len(entry.objects) > 1 or entry.size >= below):
        digest.update(content)
        out.write(content)
    return digest.hexdigest()


def _content_digest(repo: Repository, entry: Entry) -> str:
    """The SHA-256 of an entry's content, from its object names alone when it is one object
    (its name is that hash), else by reading it."""
    if len(entry.objects) == 1:
        return entry.objects[0]
    with open(os.devnull, "wb") as nowhere:
        return write_content(repo, entry, nowhere)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o600) -> Iterator[IO[bytes]]:
    """A new file at `path`: written to a temp name in its folder (0600 from the first
    byte), fsynced, chmod `mode`, renamed over `path`, the folder fsynced; nothing is left
    at `path` or beside it when the body fails."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def readable(repo: Repository) -> bool:
    return not repo.config.encrypted or bool(repo.identities)


def list_files(
    repo: Repository,
    snapshot_id: str,
    path: str = "",
    *,
    names: bool = True,
    pg_bin: Path | None = None,
) -> list[Entry]:
    """`ls`: the entries at or under `path`, each with the attachments of it when `names`."""
    text = manifest_text(repo, snapshot_id)
    entries = list(find_entries(text, path))
    if names and entries:
        from odbox_backup.attachments import attachments_of

        few = {e.path for e in entries} if len(entries) <= 100 else None
        by_store = attachments_of(repo, text, snapshot_id, few, pg_bin)
        for entry in entries:
            entry.attachments = by_store.get(entry.path, [])
    return entries


def database_part(text: str, snapshot_id: str) -> dict[str, Any]:
    at = text.find('"database":{')
    if at < 0:
        raise RepositoryError(f"snapshot {snapshot_id} is damaged: no database part")
    document, _ = _DECODER.raw_decode(text, at + len('"database":'))
    return dict(document)


# ------------------------------------------------------------------ restore --only


@dataclass
class OnlyResult:
    written: list[str]
    unchanged: list[str]


def restore_only(
    repo: Repository, snapshot_id: str, filestore: Path, paths: Sequence[str], overwrite: bool
) -> OnlyResult:
    """These files of the snapshot into the live filestore, nothing else: all are checked
    before any is written (a path the snapshot lacks, or a live file whose content differs
    without `overwrite`, writes nothing); each is written atomically, owned and moded as
    the live filestore's files are (the folder's owner; its mode without the x bits)."""
    if not filestore.is_dir():
        raise UsageError(f"{filestore} is not a folder: --only restores into the live filestore")
    text = manifest_text(repo, snapshot_id)
    entries = [one_entry(text, p, snapshot_id) for p in dict.fromkeys(map(_normal, paths))]
    del text
    plan: list[tuple[Entry, Path]] = []
    unchanged: list[str] = []
    root = filestore.resolve()
    for entry in entries:
        target = filestore / entry.path
        inside = target.parent.resolve()
        if inside != root and root not in inside.parents:
            raise ToolError(f"{target.parent} leads out of {filestore} (a symlink): nothing "
                            "was written")  # fmt: skip
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise ToolError(f"{target} is not a regular file: left alone; nothing was written")
        if target.exists():
            if target.stat().st_size == entry.size and _file_digest(target) == _content_digest(
                repo, entry
            ):
                unchanged.append(entry.path)
                continue
            if not overwrite:
                raise ToolError(
                    f"{target} exists with other content than in snapshot {snapshot_id}: "
                    "nothing was written (pass --overwrite to replace it)"
                )
        plan.append((entry, target))
    st = filestore.stat()
    chown = os.geteuid() == 0 and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid())
    dir_mode = (st.st_mode & 0o2777) | 0o700
    file_mode = (st.st_mode & 0o666) | 0o600
    written = []
    for entry, target in plan:
        folder = target.parent
        missing = [p for p in [folder, *folder.parents] if not p.exists()]
        for made in reversed(missing):
            made.mkdir(mode=dir_mode)
            if chown:
                os.chown(made, st.st_uid, st.st_gid)
            made.chmod(dir_mode)  # mkdir's mode is under the umask
        with atomic_file(target, file_mode) as out:
            write_content(repo, entry, out)
            if chown:
                os.fchown(out.fileno(), st.st_uid, st.st_gid)
        written.append(entry.path)
    return OnlyResult(written, unchanged)
