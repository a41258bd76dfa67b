"""One file back: `ls ID [PATH]`, `dump ID PATH`, `restore ID --only PATH…`.

Finding one file must not cost what a restore costs. A manifest of 200,000
files is tens of MB of JSON; parsing it whole takes seconds. So the manifest
is decrypted, decompressed and checked as always (its MAC), then its text is
searched for the entries wanted: every entry starts `{"path":<path as
json.dumps writes it>,` (`repository.entry_text`), and only those are parsed.
No other string in a manifest can hold `{"path":"` unescaped (JSON escapes a
quote inside a string), so the search finds entries and nothing else.

The attachments' names come from the dump's `ir_attachment` rows, never from
a restored database: a custom dump is streamed into `pg_restore -a -t
ir_attachment -f -`, a plain SQL one (an imported zip) read as it is, and
both stop at the end of that table's COPY block.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import subprocess
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from odbox_backup.manifests import ENTRY_START
from odbox_backup.repository import Repository, RepositoryError
from odbox_common.errors import ToolError, UsageError
from odbox_common.files import fsync_dir

_DECODER = json.JSONDecoder()


@dataclass
class Attachment:
    id: int
    name: str
    res_model: str | None
    res_id: int | None

    def describe(self) -> str:
        where = f"{self.res_model},{self.res_id}" if self.res_model else "no record"
        return f"{self.name} ({where})"


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
    return repo.codec.decode(blob, f"snapshot {snapshot_id}").decode()


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


# ------------------------------------------------------------------ attachments

_COPY = re.compile(r"COPY (?:[\w\"]+\.)?\"?ir_attachment\"? \((?P<columns>[^)]*)\) FROM stdin;")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")


def _unescape(field_text: str) -> str | None:
    """One field of COPY's text format: `\\N` is NULL; backslash escapes as COPY writes them."""
    if field_text == "\\N":
        return None

    def one(m: re.Match[str]) -> str:
        code = m[1]
        if code[0] == "x" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8))
        return _ESCAPES.get(code, code)

    return _ESCAPE.sub(one, field_text) if "\\" in field_text else field_text


def parse_attachments(
    lines: Iterable[str], wanted: Collection[str] | None = None
) -> dict[str, list[Attachment]]:
    """`store_fname` → the attachments of it, from the COPY block of ir_attachment in SQL
    lines (pg_restore's output or a plain dump); stops at the block's end. With `wanted`
    (a few paths), a row that holds none of them is not parsed."""
    found: dict[str, list[Attachment]] = {}
    lines = iter(lines)
    for line in lines:
        m = _COPY.match(line)
        if m:
            columns = [c.strip().strip('"') for c in m["columns"].split(",")]
            break
    else:
        return found
    where = {c: columns.index(c) for c in ("id", "name", "res_model", "res_id", "store_fname")
             if c in columns}  # fmt: skip
    if "store_fname" not in where:
        return found
    for line in lines:
        line = line.rstrip("\n")
        if line == "\\.":
            break
        if wanted is not None and not any(path in line for path in wanted):
            continue
        fields = line.split("\t")

        def get(column: str, fields: list[str] = fields) -> str | None:
            return _unescape(fields[where[column]]) if column in where else None

        store = get("store_fname")
        if not store:
            continue
        res_id = get("res_id")
        found.setdefault(store, []).append(Attachment(
            int(get("id") or 0), get("name") or "", get("res_model"),
            int(res_id) if res_id and res_id.lstrip("-").isdigit() else None,
        ))  # fmt: skip
    return found


def dump_attachments(
    repo: Repository,
    manifest_db: dict[str, Any],
    pg_bin: Path | None = None,
    wanted: Collection[str] | None = None,
) -> dict[str, list[Attachment]]:
    """The ir_attachment rows of a snapshot's dump, by store_fname, without restoring it
    (those of `wanted` only, when given)."""
    objects = list(manifest_db["objects"])
    if manifest_db.get("format") == "sql":
        return parse_attachments(_sql_lines(repo, objects), wanted)
    from odbox_backup.backup import find_pg_tool

    pg_restore = find_pg_tool("pg_restore", pg_bin)
    # stderr to a file, never a pipe nobody reads while pg_restore writes
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [pg_restore, "--data-only", "--table=ir_attachment", "--file=-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
        )  # fmt: skip
        found, failed = _read_while_feeding(repo, objects, proc, wanted)
        errors.seek(0)
        error = errors.read().decode(errors="replace").strip()
    if failed:
        raise failed[0]
    if proc.returncode > 0:  # < 0: stopped by us once the table was read
        last = error.splitlines()[-1] if error else f"exit {proc.returncode}"
        raise ToolError(f"pg_restore could not read the snapshot's dump: {last}")
    return found


def _read_while_feeding(
    repo: Repository,
    objects: Sequence[str],
    proc: subprocess.Popen[bytes],
    wanted: Collection[str] | None,
) -> tuple[dict[str, list[Attachment]], list[BaseException]]:
    """The dump's objects into pg_restore's stdin (a thread) while its output is parsed;
    pg_restore is stopped as soon as the ir_attachment block has been read."""
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    stop = threading.Event()
    failed: list[BaseException] = []

    def feed() -> None:
        try:
            for content in fetch(repo, objects, alone=True):
                if stop.is_set():
                    break
                stdin.write(content)
        except BrokenPipeError:
            pass  # pg_restore was stopped once the table was read
        except BaseException as e:
            failed.append(e)
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        found = parse_attachments(_copy_lines(stdout, wanted), wanted)
    finally:
        stop.set()
        stdout.close()
        if proc.poll() is None:
            proc.terminate()  # the table is read: the rest of the dump is not needed
        proc.wait()
        feeder.join()
    return found, failed


def _copy_lines(stream: IO[bytes], wanted: Collection[str] | None) -> Iterator[str]:
    """pg_restore's output as lines; with `wanted`, of the COPY block only the rows that
    hold one of them (found by a search of each MiB read, not a loop over 200,000 rows)."""
    if wanted is None:
        for raw in stream:
            yield raw.decode("utf-8", "replace")
        return
    needles = [w.encode() for w in wanted]
    pending, in_copy = b"", False
    while block := stream.read(1 << 20):
        data = pending + block
        cut = data.rfind(b"\n") + 1
        data, pending = data[:cut], data[cut:]
        if not in_copy:
            at = data.find(b"\nCOPY ")
            at = 0 if data.startswith(b"COPY ") else at + 1 if at >= 0 else -1
            if at < 0:
                continue  # SET lines and comments before the block: nothing to parse
            end = data.index(b"\n", at) + 1
            yield data[at:end].decode("utf-8", "replace")
            in_copy, data = True, data[end:]
        stop = 0 if data.startswith(b"\\.\n") else data.find(b"\n\\.\n")
        rows = data if stop < 0 else data[:stop]
        lines = set()
        for needle in needles:
            at = rows.find(needle)
            while at >= 0:
                start = rows.rfind(b"\n", 0, at) + 1
                end = rows.find(b"\n", at)
                lines.add((start, rows[start : end if end >= 0 else len(rows)]))
                at = rows.find(needle, at + 1)
        for _, line in sorted(lines):
            yield line.decode("utf-8", "replace") + "\n"
        if stop >= 0:
            yield "\\.\n"
            return
    if pending:
        yield pending.decode("utf-8", "replace")


def _sql_lines(repo: Repository, objects: Sequence[str]) -> Iterator[str]:
    pending = b""
    for content in fetch(repo, objects, alone=True):
        pending += content
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace") + "\n"
    if pending:
        yield pending.decode("utf-8", "replace")


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
        db = _database_part(text, snapshot_id)
        few = {e.path for e in entries} if len(entries) <= 100 else None
        by_store = dump_attachments(repo, db, pg_bin, few)
        for entry in entries:
            entry.attachments = by_store.get(entry.path, [])
    return entries


def _database_part(text: str, snapshot_id: str) -> dict[str, Any]:
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
