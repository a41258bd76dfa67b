"""Odoo's own backup format: `export --odoo-zip` writes it, `import` reads it.

Odoo's database manager (`/web/database/backup`, format zip) writes a zip
holding `dump.sql` (`pg_dump --no-owner`, plain SQL), `filestore/` (the
database's filestore, same paths) and `manifest.json`:
`{"odoo_dump": "1", "db_name", "version", "version_info", "major_version",
"pg_version", "modules": {name: latest_version}}`. Its restore runs
`psql -f dump.sql` on a new database and moves `filestore/` into place.

Export streams: the dump's objects go into `pg_restore --no-owner
--no-privileges -f -` (custom format to plain SQL, no database needed), whose
output goes straight into the zip entry; each file goes object by object. The
zip is written to a temporary name next to OUT and renamed when complete.

Import takes such a zip, or a folder with the same layout (an unzipped Odoo
backup, or the seed's backup folder: one `*.sql` dump and `filestore/`), and
makes a snapshot whose database format is `sql`; restore runs it with psql.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import json
import os
import socket
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from odbox_backup.attachments import names_from_dump
from odbox_backup.backup import (
    BackupFailed,
    Counters,
    find_pg_tool,
    store_dump,
    store_file,
)
from odbox_backup.manifests import JSONTexts, entry_text, file_entries
from odbox_backup.repository import Repository
from odbox_backup.restore_checks import check_objects
from odbox_backup.tags import IMPORT
from odbox_common.console import count_of
from odbox_common.errors import ToolError, UsageError
from odbox_common.odoozip import OdooZipWriter
from odbox_common.progress import Progress

BLOCK = 1 << 20


class OdooZipError(ToolError):
    """The zip or folder is not an Odoo backup we can read, or the export failed."""


# ------------------------------------------------------------------ export


def odoo_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    version = manifest["odoo"].get("version")
    parts = [int(p) for p in str(version).split(".")[:2] if p.isdigit()] if version else []
    major, minor = [*parts, 0, 0][:2] if parts else (None, None)
    return {
        "odoo_dump": "1",
        "db_name": manifest["database"]["name"],
        "version": version,
        "version_info": [major, minor, 0, "final", 0, ""] if major is not None else None,
        "major_version": f"{major}.{minor}" if major is not None else None,
        "pg_version": manifest["database"]["pg_version"],
        "modules": manifest["odoo"].get("modules", {}),
    }


def _write_dump_sql(
    repo: Repository, manifest: dict[str, Any], sink: IO[bytes], pg_bin: Path | None,
    progress: Progress,
) -> None:  # fmt: skip
    database = manifest["database"]
    if database["format"] == "sql":
        for name in database["objects"]:
            data = repo.get_object(name)
            sink.write(data)
            progress.advance(len(data))
    else:
        pg_restore = find_pg_tool("pg_restore", pg_bin)
        child = subprocess.Popen(
            [pg_restore, "--no-owner", "--no-privileges", "--file=-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None
        failure: list[BaseException] = []

        def feed() -> None:
            assert child.stdin is not None
            try:
                for name in database["objects"]:
                    data = repo.get_object(name)
                    child.stdin.write(data)
                    progress.advance(len(data))
            except BrokenPipeError:
                pass
            except BaseException as e:
                failure.append(e)
                child.kill()
            finally:
                with contextlib.suppress(OSError):
                    child.stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            while block := child.stdout.read(BLOCK):
                sink.write(block)
        except BaseException:
            child.kill()
            raise
        finally:
            feeder.join()
        stderr = child.stderr.read().decode(errors="replace")
        status = child.wait()
        if failure:
            raise failure[0]
        if status != 0:
            lines = [line for line in stderr.splitlines() if line.strip()]
            raise OdooZipError(
                f"pg_restore could not turn the dump into SQL: {lines[-1] if lines else status}"
            )


@dataclass
class Exported:
    path: Path
    files: int
    bytes: int


def export_zip(
    repo: Repository,
    snapshot_id: str,
    out: Path,
    pg_bin: Path | None = None,
    progress: Progress | None = None,
) -> Exported:
    progress = progress or Progress()
    if out.exists():
        raise UsageError(f"{out} exists; nothing was written (remove it or choose another name)")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a folder")
    manifest = repo.read_snapshot(snapshot_id)
    check_objects(repo, manifest)
    for entry in file_entries(manifest):
        try:
            entry["path"].encode()
        except UnicodeEncodeError:
            shown = entry["path"].encode(errors="surrogateescape").decode(errors="replace")
            raise OdooZipError(
                f"snapshot {snapshot_id} holds a file whose name is not UTF-8 ({shown}): an "
                "Odoo zip cannot name it (Odoo's own files are hex hashes); restore the "
                "snapshot instead; nothing was written"
            ) from None
    writer = None
    try:
        writer = OdooZipWriter(out)  # 0600: the whole database and every attachment, in clear
        progress.phase(f"writing dump.sql of {manifest['database']['name']}",
                       manifest["database"]["size"])  # fmt: skip
        with writer.dump() as sink:
            _write_dump_sql(repo, manifest, sink, pg_bin, progress)
        fs = manifest["filestore"]
        progress.phase(f"writing filestore/: {count_of(fs['count'], 'file')}", fs["bytes"])
        for entry in repo.files_in_read_order(manifest):
            with writer.file(entry["path"], entry["size"]) as sink:
                for name in entry["objects"]:
                    data = repo.get_object(name)
                    sink.write(data)
                    progress.advance(len(data))
        writer.commit(odoo_manifest(manifest))
    except BaseException as e:
        if writer is not None:
            writer.abort()
        if isinstance(e, OSError) and not isinstance(e, ToolError):
            raise OdooZipError(f"cannot write {out}: {e.strerror or e}; nothing was left") from e
        raise
    return Exported(out, fs["count"], fs["bytes"])


# ------------------------------------------------------------------ import


class _Source(abc.ABC):
    """An Odoo backup to read: a zip, or a folder of the same layout."""

    name: str

    @abc.abstractmethod
    def dump(self) -> tuple[str, str]:
        """The dump's member name and its database format."""

    @abc.abstractmethod
    def open(self, member: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    @abc.abstractmethod
    def manifest(self) -> dict[str, Any] | None:
        """Odoo's manifest.json, when there is one."""

    @abc.abstractmethod
    def files(self) -> Iterator[tuple[str, int]]:
        """(path under filestore/, size) of every file."""

    def open_file(self, rel: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return self.open(f"filestore/{rel}")

    def close(self) -> None:
        return


MAX_MANIFEST = 1 << 20  # Odoo's manifest.json: a few KiB (a name per module)
_MANIFEST_TYPES = {"db_name": str, "version": str, "pg_version": str, "modules": dict}


def _checked_manifest(document: Any, where: str) -> dict[str, Any] | None:
    """Odoo's manifest, its fields of the types Odoo writes (a list as `modules` or a
    number as `db_name` was an unexpected TypeError)."""
    if not isinstance(document, dict):
        return None
    for key, kind in _MANIFEST_TYPES.items():
        value = document.get(key)
        if value is not None and not isinstance(value, kind):
            raise OdooZipError(
                f"{where}: {key!r} is a {type(value).__name__}, not a "
                f"{'JSON object' if kind is dict else 'string'}: it is not Odoo's manifest; "
                "no snapshot was written"
            )
    modules = document.get("modules") or {}
    if not all(isinstance(v, str | None) for v in modules.values()):
        raise OdooZipError(f"{where}: a version in 'modules' is not a string; no snapshot "
                           "was written")  # fmt: skip
    return document


def _safe(path: str) -> str | None:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    return p.as_posix()


class _ZipSource(_Source):
    def __init__(self, path: Path) -> None:
        self.name = path.name
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise OdooZipError(f"{path} is not a readable zip: {e}") from e
        self.members = {i.filename: i for i in self.zf.infolist() if not i.is_dir()}

    def dump(self) -> tuple[str, str]:
        if "dump.sql" in self.members:
            return "dump.sql", "sql"
        raise OdooZipError(f"{self.name} holds no dump.sql: it is not an Odoo backup zip")

    @contextlib.contextmanager
    def open(self, member: str) -> Iterator[IO[bytes]]:
        with self.zf.open(self.members[member]) as f:
            yield f

    def manifest(self) -> dict[str, Any] | None:
        if "manifest.json" not in self.members:
            return None
        try:
            with self.zf.open(self.members["manifest.json"]) as f:
                text = f.read(MAX_MANIFEST + 1)  # what it says it holds may be a lie
            document = json.loads(text) if len(text) <= MAX_MANIFEST else None
        except (ValueError, zipfile.BadZipFile) as e:
            raise OdooZipError(f"{self.name}: manifest.json is damaged: {e}") from e
        if len(text) > MAX_MANIFEST:
            raise OdooZipError(
                f"{self.name}: manifest.json holds more than {MAX_MANIFEST >> 20} MiB (Odoo's "
                "holds a few KiB): refused; no snapshot was written"
            )
        return _checked_manifest(document, f"{self.name}: manifest.json")

    def files(self) -> Iterator[tuple[str, int]]:
        for member, info in sorted(self.members.items()):
            if member.startswith("filestore/"):
                rel = _safe(member.removeprefix("filestore/"))
                if rel is None:
                    raise OdooZipError(f"{self.name} names a file outside filestore/: {member}")
                yield rel, info.file_size

    def close(self) -> None:
        self.zf.close()


class _FolderSource(_Source):
    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.root = path

    def dump(self) -> tuple[str, str]:
        if (self.root / "dump.sql").is_file():
            return "dump.sql", "sql"
        sql = sorted(p.name for p in self.root.glob("*.sql") if p.is_file())
        if len(sql) == 1:
            return sql[0], "sql"
        if len(sql) > 1:
            raise OdooZipError(f"{self.root} holds {len(sql)} *.sql files: which one is the dump?")
        raise OdooZipError(f"{self.root} holds no dump.sql (or other *.sql dump)")

    @contextlib.contextmanager
    def open(self, member: str) -> Iterator[IO[bytes]]:
        with (self.root / member).open("rb") as f:
            yield f

    def manifest(self) -> dict[str, Any] | None:
        path = self.root / "manifest.json"
        if not path.is_file():
            return None
        try:
            with path.open("rb") as f:
                text = f.read(MAX_MANIFEST + 1)
            if len(text) > MAX_MANIFEST:
                raise OdooZipError(f"{path} holds more than {MAX_MANIFEST >> 20} MiB: refused")
            document = json.loads(text)
        except ValueError as e:
            raise OdooZipError(f"{path} is damaged: {e}") from e
        return _checked_manifest(document, str(path))

    def files(self) -> Iterator[tuple[str, int]]:
        base = self.root / "filestore"
        if not base.is_dir():
            return
        for folder, dirs, names in os.walk(base):
            dirs.sort()
            for name in sorted(names):
                path = Path(folder, name)
                if path.is_file() and not path.is_symlink():
                    yield path.relative_to(base).as_posix(), path.stat().st_size


def import_backup(
    repo: Repository,
    path: Path,
    *,
    db_name: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """A snapshot from an Odoo zip or backup folder (the caller holds the lock); its manifest."""
    progress = progress or Progress()
    started = time.monotonic()
    if path.is_dir():
        source: _Source = _FolderSource(path)
    elif path.is_file():
        source = _ZipSource(path)
    else:
        raise UsageError(f"{path} does not exist")
    try:
        odoo = source.manifest() or {}
        member, fmt = source.dump()
        counters = Counters()
        progress.phase(f"importing {member} from {source.name}")
        try:
            with source.open(member) as stream:
                dump = store_dump(repo, stream, counters, progress)
            progress.phase(f"importing the filestore from {source.name}")
            files = []
            total = 0
            for rel, size in source.files():
                with source.open_file(rel) as stream:
                    before = counters.bytes
                    try:
                        objects = store_file(repo, stream, size, counters, progress)
                    except BackupFailed as e:
                        raise OdooZipError(f"{rel} in {source.name}: {e}") from e
                    got = counters.bytes - before + len(stream.read(1))
                if got != size:
                    raise OdooZipError(f"{rel} in {source.name} gave {got} bytes, not {size}")
                files.append(entry_text(rel, size, objects))  # path first, as `ls` finds it
                total += size
        except (zipfile.BadZipFile, EOFError) as e:
            raise OdooZipError(f"{source.name} is damaged: {e}; no snapshot was written") from e
        except OSError as e:
            if isinstance(e, ToolError):
                raise
            raise OdooZipError(f"cannot read {source.name}: {e.strerror or e}") from e
    finally:
        source.close()
    version = odoo.get("version")
    database = {
        "name": db_name or str(odoo.get("db_name") or path.stem),
        "pg_version": str(odoo.get("pg_version") or "unknown"),
        "format": fmt,
        **dump,
    }
    filestore: dict[str, Any] = {"files": JSONTexts(files), "count": len(files), "bytes": total}
    names = names_from_dump(repo, database)  # for `ls`; without it, ls reads the dump
    if names is not None:
        filestore["names"] = names
    manifest = {
        "version": 1,
        "id": repo.next_snapshot_id(),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "mode": "unknown",
        "source": "import",
        "origin": source.name,
        "tags": [IMPORT],
        "database": database,
        "odoo": {
            "version": str(version) if version else None,
            "modules": {str(k): str(v) for k, v in dict(odoo.get("modules") or {}).items()},
        },
        "filestore": filestore,
        "totals": counters.totals(started),
    }
    progress.phase("writing the snapshot manifest")
    repo.write_snapshot(manifest)
    return manifest
