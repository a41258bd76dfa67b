"""The attachments a snapshot's files are: `ir_attachment`'s name, model and record of
each `store_fname`, for `ls` (FORMAT.md, "Attachment names").

A run stores them as one object the manifest names (`filestore.names`), read
from the database right after the dump, as the missing-file check reads
`store_fname`: `ls` then reads that one object, however large the dump. The
object is content-addressed, compressed and encrypted like any other, and the
manifest that names it is authenticated: a forged or altered one is refused.
It is a JSON array with one row a line, `[store_fname, id, name, res_model,
res_id]`, sorted, so the rows of a few files are found by a search of its text.

A snapshot without it (made before, or by `import`/k8s-migrate) has the names
read from its dump's `ir_attachment` rows, never from a restored database: a
custom dump is streamed into `pg_restore -a -t ir_attachment -f -`, a plain SQL
one (an imported zip) read as it is, and both stop at the end of that table's
COPY block; that costs the dump read up to that table.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import subprocess
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from odbox_backup.browse import database_part, fetch
from odbox_backup.codec import CorruptObject
from odbox_backup.indexes import OBJECT_NAME
from odbox_backup.repository import Repository
from odbox_common.errors import ToolError

_DECODER = json.JSONDecoder()
_NAMES_PART = '"names":{"object":'  # how `filestore.names` starts in a manifest's JSON
_COLUMNS = ("store_fname", "id", "name", "res_model", "res_id")


@dataclass
class Attachment:
    id: int
    name: str
    res_model: str | None
    res_id: int | None

    def describe(self) -> str:
        where = f"{self.res_model},{self.res_id}" if self.res_model else "no record"
        return f"{self.name} ({where})"


# ------------------------------------------------------------------ the names object


class _NamesWriter:
    """The names object made as its rows come (sorted): hashed and compressed as it goes,
    so memory holds the compressed object, not the rows."""

    def __init__(self, repo: Repository) -> None:
        import zstandard

        self.repo, self.rows = repo, 0
        self.digest = hashlib.sha256()
        self.frame = io.BytesIO()
        self.writer = zstandard.ZstdCompressor(level=repo.codec.level).compressobj()
        self._write("[")

    def _write(self, text: str) -> None:
        data = text.encode()
        self.digest.update(data)
        self.frame.write(self.writer.compress(data))

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        self._write("".join(("\n" if self.rows + i == 0 else ",\n") + _row_text(row)
                            for i, row in enumerate(rows)))  # fmt: skip
        self.rows += len(rows)

    def store(self) -> dict[str, Any]:
        """The object stored; the manifest's `filestore.names` part that names it."""
        self._write("\n]")
        self.frame.write(self.writer.flush())
        name = self.digest.hexdigest()
        self.repo.put_frame(name, self.frame.getvalue())
        return {"object": name, "rows": self.rows}


def store_names(repo: Repository, conninfo: str) -> dict[str, Any]:
    """`run`'s hook: the database's ir_attachment rows that name a file, as one object; the
    manifest's `filestore.names` part that names it."""
    import psycopg
    from psycopg import sql

    from odbox_backup.backup import BackupFailed

    names = _NamesWriter(repo)
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            has = conn.execute("SELECT to_regclass('ir_attachment')").fetchone()
            present = set() if not has or not has[0] else {
                str(name) for (name,) in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'ir_attachment'::regclass"
                    " AND attnum > 0 AND NOT attisdropped")
            }  # fmt: skip
            if "store_fname" in present:
                select = sql.SQL(", ").join(sql.Identifier(c) if c in present else sql.NULL
                                            for c in _COLUMNS)  # fmt: skip
                with conn.cursor("names") as cursor:  # a batch at a time, never a list
                    cursor.execute(sql.SQL(
                        "SELECT {} FROM ir_attachment WHERE store_fname IS NOT NULL AND"
                        ' store_fname <> \'\' ORDER BY store_fname COLLATE "C", id'
                    ).format(select))  # fmt: skip
                    while batch := cursor.fetchmany(5000):
                        names.add(batch)
    except psycopg.Error as e:
        raise BackupFailed(f"cannot read ir_attachment: {str(e).strip().splitlines()[0]}") from e
    return names.store()


def names_from_dump(repo: Repository, database: dict[str, Any]) -> dict[str, Any] | None:
    """`import`'s hook: the names object made from the dump just stored (read once, now,
    rather than by every `ls`); None when its rows cannot be read here (no pg_restore for a
    custom dump): `ls` then reads the dump."""
    try:
        found = dump_attachments(repo, database)
    except ToolError:
        return None
    names = _NamesWriter(repo)
    for store in sorted(found):
        names.add([(store, a.id, a.name, a.res_model, a.res_id)
                   for a in sorted(found[store], key=lambda a: a.id)])  # fmt: skip
    return names.store()


def _row_text(row: Sequence[Any]) -> str:
    store, ident, name, model, res_id = row
    return json.dumps([str(store), int(ident or 0), "" if name is None else str(name),
                       None if model is None else str(model),
                       res_id if isinstance(res_id, int) else None],
                      ensure_ascii=False, separators=(",", ":"))  # fmt: skip


def names_part(manifest_text: str) -> dict[str, Any] | None:
    """A manifest's `filestore.names` part, found in its (authenticated) JSON text, or None
    when it has none. The part comes after every file entry: searched from the end. Only a
    key can hold `"names":{` unescaped, and no other key of a manifest holds an object
    starting with `object`."""
    at = manifest_text.rfind(_NAMES_PART)
    if at < 0:
        return None
    part, _ = _DECODER.raw_decode(manifest_text, at + len('"names":'))
    return dict(part)


def stored_names(
    repo: Repository, part: dict[str, Any], wanted: Collection[str] | None = None
) -> dict[str, list[Attachment]]:
    """`store_fname` → its attachments, from the names object (those of `wanted`, when
    given, found by a search of its text: a row starts a line, and JSON escapes a newline
    inside a string)."""
    name = str(part.get("object"))
    if not OBJECT_NAME.fullmatch(name):
        raise CorruptObject(f"the snapshot's attachment names are damaged: {name!r} is no object")
    [content] = fetch(repo, [name], alone=True)
    text = content.decode()
    what = f"the attachment names (object {name[:12]}…)"
    found: dict[str, list[Attachment]] = {}
    try:
        if wanted is None:
            rows = json.loads(text)
        else:
            rows = []
            for path in wanted:
                needle = "\n" + json.dumps([path], ensure_ascii=False)[:-1] + ","
                at = text.find(needle)
                while at >= 0:
                    rows.append(_DECODER.raw_decode(text, at + 1)[0])
                    at = text.find(needle, at + len(needle))
        for store, ident, label, model, res_id in rows:
            found.setdefault(str(store), []).append(Attachment(
                int(ident), str(label), None if model is None else str(model),
                None if res_id is None else int(res_id)))  # fmt: skip
    except (ValueError, TypeError) as e:
        raise CorruptObject(f"{what} are damaged: {e}") from e
    return found


def attachments_of(
    repo: Repository,
    manifest_text: str,
    snapshot_id: str,
    wanted: Collection[str] | None = None,
    pg_bin: Path | None = None,
) -> dict[str, list[Attachment]]:
    """The attachments of a snapshot's files (of `wanted`, when given): from its names
    object, else (a snapshot without one) from its dump."""
    part = names_part(manifest_text)
    if part is not None:
        return stored_names(repo, part, wanted)
    return dump_attachments(repo, database_part(manifest_text, snapshot_id), pg_bin, wanted)


# ------------------------------------------------------------------ from the dump


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
