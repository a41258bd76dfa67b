"""Where a pull goes: a snapshot in an odbox-backup repository, or an Odoo zip.

Both take the dump as a stream and the files one at a time, and write their
last piece (the manifest, or the zip's rename) only in `commit`; `abort`
leaves nothing a reader would take for a result.

A repository pull keeps a journal of the files it stored (JSON lines, a
`filestore.files` entry each), written only after the objects it names are
flushed to disk. A pull interrupted half-way leaves the objects and the
journal; the next pull of the same PVC into the same repository asks tar only
for the files the journal does not already account for. Like odbox-backup's
own cache, the journal only saves work: an entry counts only if its path is an
Odoo filestore name (the SHA-1 of the content, so the same path is the same
bytes) and every object it names is still in the repository.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from odbox_backup.backup import (
    ODOO_PATH,
    Counters,
    filestore_part,
    store_dump,
    store_file,
)
from odbox_backup.indexes import OBJECT_NAME
from odbox_backup.manifests import JSONTexts, entry_text
from odbox_backup.odoozip import odoo_manifest
from odbox_backup.repository import Repository
from odbox_backup.tags import K8S_MIGRATE
from odbox_common.console import human_size
from odbox_common.errors import ToolError, UsageError
from odbox_common.files import lock_or_refuse
from odbox_common.odoozip import OdooZipWriter, leftover_pattern
from odbox_common.progress import Progress

NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
JOURNAL_EVERY = 2.0  # seconds between flushes of objects and journal lines


class SinkError(ToolError):
    """The repository or the zip could not be written."""


@dataclass
class Facts:
    db_name: str
    pg_version: str
    modules: dict[str, str]
    odoo_version: str | None


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class Sink(abc.ABC):
    dump_options: list[str]
    finishing = "writing the snapshot"  # the last phase's name
    reused_bytes = 0  # the bytes of the files `reuse` found here

    @abc.abstractmethod
    def describe(self) -> str: ...

    @abc.abstractmethod
    def add_dump(self, stream: Any) -> None: ...

    def reuse(self, path: str) -> bool:
        """Whether `path` is already here (then tar is not asked for it)."""
        return False

    def resume_note(self, stored: int) -> str:
        """For the error line of a cut tar: what a re-run would reuse (`stored` files came)."""
        return ""

    @abc.abstractmethod
    def add_file(self, path: str, size: int, stream: Any) -> None: ...

    @abc.abstractmethod
    def commit(self, facts: Facts, origin: str) -> str:
        """Write the result; one line saying what was written."""

    @abc.abstractmethod
    def abort(self) -> None: ...


def journal_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "k8s-migrate" if xdg else Path.home() / ".cache" / "k8s-migrate"


@dataclass
class RepoSink(Sink):
    """A snapshot in an odbox-backup repository (the caller holds its lock)."""

    repo: Repository
    source_key: str  # the cluster, namespace, PVC and path: what the journal is for
    journal_folder: Path = field(default_factory=journal_dir)
    dump_options: list[str] = field(default_factory=lambda: ["--format=custom", "--compress=0"])

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.time = dt.datetime.now(dt.UTC)
        self.counters = Counters()
        self.files = JSONTexts()
        self.database: dict[str, Any] | None = None
        digest = hashlib.sha256(self.source_key.encode()).hexdigest()[:16]
        self.journal = self.journal_folder / f"{self.repo.config.id}-{digest}.jsonl"
        self.earlier = self._read_journal()
        self.pending: list[str] = []
        self.flushed_at = time.monotonic()
        self.reused = 0
        self.reused_bytes = 0

    def describe(self) -> str:
        return f"a snapshot in {self.repo.store.url}"

    def _read_journal(self) -> dict[str, str]:
        """Path -> entry text of every whole, well-formed journal line (a line cut by a crash
        or a full disk, or anything else, is skipped: that file is just sent again)."""
        entries: dict[str, str] = {}
        try:
            with self.journal.open() as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        path, size, objects = entry["path"], entry["size"], entry["objects"]
                    except (ValueError, TypeError, KeyError):
                        continue
                    if (
                        isinstance(path, str)
                        and isinstance(size, int)
                        and size >= 0
                        and isinstance(objects, list)
                        and all(isinstance(n, str) and OBJECT_NAME.fullmatch(n) for n in objects)
                    ):
                        entries[path] = entry_text(path, size, objects)
        except OSError:
            pass
        return entries

    def add_dump(self, stream: Any) -> None:
        self.database = store_dump(self.repo, stream, self.counters, Progress())

    def reuse(self, path: str) -> bool:
        text = self.earlier.get(path)
        if text is None or not ODOO_PATH.fullmatch(path):
            return False
        entry = json.loads(text)
        known = self.repo.known_objects()
        if not all(name in known for name in entry["objects"]):
            return False
        self.files.append(text)
        self.counters.objects += len(entry["objects"])
        self.counters.bytes += int(entry["size"])
        self.reused += 1
        self.reused_bytes += int(entry["size"])
        return True

    def resume_note(self, stored: int) -> str:
        return (
            f"; the {stored} files that arrived are kept, and the same pull run again "
            "resumes from there"
        )

    def add_file(self, path: str, size: int, stream: Any) -> None:
        objects = store_file(self.repo, stream, size, self.counters, Progress())
        text = entry_text(path, size, objects)
        self.files.append(text)
        self.pending.append(text)
        if time.monotonic() - self.flushed_at >= JOURNAL_EVERY:
            self._write_journal()

    def _write_journal(self) -> None:
        """Objects first to disk, then the lines that name them (so a line never names an
        object a power cut could have lost)."""
        if not self.pending:
            return
        self.repo.flush()  # with the small files' pack so far, and its index
        try:
            self.journal_folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self.journal.open("a+") as f:
                if f.tell() and (f.seek(f.tell() - 1), f.read(1))[1] != "\n":
                    f.write("\n")  # after a line cut short: never glue onto it
                f.writelines(f"{text}\n" for text in self.pending)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            pass  # the journal only saves work on a re-run
        self.pending = []
        self.flushed_at = time.monotonic()

    def commit(self, facts: Facts, origin: str) -> str:
        assert self.database is not None
        files = filestore_part(self.files)
        manifest = {
            "version": 1,
            "id": self.repo.next_snapshot_id(),
            "time": self.time.isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "mode": "cold",
            "source": "k8s-migrate",
            "origin": origin,
            "tags": [K8S_MIGRATE],
            "database": {
                "name": facts.db_name,
                "pg_version": facts.pg_version,
                "wal": None,
                "format": "pg_dump-custom",
                **self.database,
            },
            "odoo": {"version": facts.odoo_version, "modules": facts.modules},
            "filestore": files,
            "totals": self.counters.totals(self.started),
        }
        self.repo.write_snapshot(manifest)
        self.pending = []
        self._rewrite_journal(files["files"])
        t = self.counters
        return (
            f"snapshot {manifest['id']} in {self.repo.store.url}: database "
            f"{facts.db_name} ({plural(self.database['size'], 'byte')}), "
            f"{plural(files['count'], 'file')} ({plural(files['bytes'], 'byte')}, "
            f"{self.reused} already there); {plural(t.new_objects, 'new object')}, "
            f"{plural(t.new_bytes, 'new byte')}"
        )

    def _rewrite_journal(self, files: list[str]) -> None:
        """After a snapshot the journal is that snapshot's files: a later pull of the same
        PVC asks only for what is new."""
        tmp = self.journal.with_name(f"{self.journal.name}.tmp-{secrets.token_hex(4)}")
        try:
            self.journal_folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with tmp.open("w") as f:
                f.writelines(f"{text}\n" for text in files)
            tmp.replace(self.journal)
        except OSError:
            tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        """What arrived stays, as objects no snapshot names yet, with its journal lines."""
        with contextlib.suppress(ToolError):
            self._write_journal()


@dataclass
class ZipSink(Sink):
    """An Odoo zip (`dump.sql`, `filestore/`, `manifest.json`), as Odoo's database manager
    restores it; written under a temporary name and renamed at the end.

    The temporary file (`.NAME.tmp-` and 8 random hex digits, next to the zip) is held
    with an exclusive flock while it is written: one that can be locked is a killed run's
    leftover, and is deleted (`tidy`; plan only says so); one that cannot is another
    pull's, writing now."""

    out: Path
    tidy: bool = True
    dump_options: list[str] = field(default_factory=lambda: ["--format=plain", "--no-owner"])
    finishing = "writing the zip"

    def __post_init__(self) -> None:
        """The checks and the temporary file, made now: before the cluster is touched."""
        if self.out.is_dir():
            raise UsageError(
                f"{self.out} is a folder: give the zip's file name, e.g. {self.out / 'odoo.zip'}"
            )
        if self.out.exists():
            raise UsageError(
                f"{self.out} exists; nothing was done (remove it or pick another name)"
            )
        if not self.out.parent.is_dir():
            raise UsageError(f"{self.out.parent} is not a folder")
        self.notes: list[str] = []
        self._leftovers()
        try:
            self.writer = OdooZipWriter(self.out)
        except OSError as e:
            raise UsageError(f"cannot write {self.out}: {e.strerror or e}; nothing was done") from e
        self.tmp = self.writer.temp
        self.dump_size = 0
        self.count = 0
        self.bytes = 0

    def _leftovers(self) -> None:
        """The temporary files of earlier runs next to the zip: a killed run's (not locked)
        is deleted, with a note; another pull's, writing now (locked), stops this one."""
        for path in sorted(self.out.parent.glob(leftover_pattern(self.out))):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue  # gone meanwhile
            try:
                lock_or_refuse(fd, f"another pull is writing {self.out} (its temporary file "
                               f"{path} is in use); nothing was done: wait for it, or pick "
                               "another name")  # fmt: skip
                size = human_size(os.fstat(fd).st_size)
                if self.tidy:
                    path.unlink(missing_ok=True)
                    self.notes.append(f"deleted {path} ({size}), left by a pull that was killed")
                else:
                    self.notes.append(
                        f"{path} ({size}) was left by a pull that was killed: a pull deletes it"
                    )
            finally:
                os.close(fd)

    def describe(self) -> str:
        return str(self.out)

    def _copy(self, stream: Any, sink: IO[bytes], limit: int | None = None) -> int:
        done = 0
        while limit is None or done < limit:
            data = stream.read(1 << 20 if limit is None else min(1 << 20, limit - done))
            if not data:
                break
            sink.write(data)
            done += len(data)
        return done

    def add_dump(self, stream: Any) -> None:
        try:
            with self.writer.dump() as sink:
                self.dump_size = self._copy(stream, sink)
        except OSError as e:
            raise SinkError(f"cannot write {self.out}: {e.strerror or e}") from e

    def add_file(self, path: str, size: int, stream: Any) -> None:
        try:
            with self.writer.file(path, size) as sink:
                got = self._copy(stream, sink, size)
        except OSError as e:
            raise SinkError(f"cannot write {self.out}: {e.strerror or e}") from e
        if got != size:
            raise SinkError(f"{path}: {got} of {size} bytes arrived")
        self.count += 1
        self.bytes += size

    def commit(self, facts: Facts, origin: str) -> str:
        manifest = {
            "database": {"name": facts.db_name, "pg_version": facts.pg_version},
            "odoo": {"version": facts.odoo_version, "modules": facts.modules},
        }
        try:
            self.writer.commit(odoo_manifest(manifest))
        except OSError as e:
            raise SinkError(f"cannot write {self.out}: {e.strerror or e}; nothing was left") from e
        return (
            f"{self.out}: dump.sql of {facts.db_name} ({plural(self.dump_size, 'byte')}), "
            f"{plural(self.count, 'file')} ({plural(self.bytes, 'byte')})"
        )

    def abort(self) -> None:
        """The temporary file goes (after a commit it has been renamed: nothing to do)."""
        self.writer.abort()


@dataclass
class Output:
    """Where a pull writes (--repo or --odoo-zip), checked before the cluster is touched:
    the repository opened, or the zip's temporary file made. `plan` opens it the same way
    (and closes it at once); whatever fails, closing leaves nothing half-written."""

    repository: Repository | None = None
    zip: ZipSink | None = None

    @classmethod
    def open(cls, repo: str | None, odoo_zip: Path | None, *, tidy: bool = True) -> Output:
        """`tidy`: delete a killed pull's temporary zip (plan only notes it)."""
        if (repo is None) == (odoo_zip is None):
            raise UsageError("give one of --repo REPO and --odoo-zip OUT")
        if odoo_zip is not None:
            return cls(zip=ZipSink(odoo_zip, tidy=tidy))
        from odbox_backup.repository import RepositoryError
        from odbox_backup.store import NotFound, open_store

        assert repo is not None
        try:
            return cls(repository=Repository.open(open_store(repo)))
        except RepositoryError as e:
            if isinstance(e.__cause__, NotFound):  # not initialised: the command line's fault
                raise UsageError(str(e)) from e
            raise

    @property
    def notes(self) -> list[str]:
        """What opening it found and did (a killed pull's temporary zip)."""
        return self.zip.notes if self.zip is not None else []

    def describe(self) -> str:
        if self.zip is not None:
            return self.zip.describe()
        assert self.repository is not None
        return f"a snapshot in {self.repository.store.url}"

    @contextlib.contextmanager
    def sink(self, source_key: str, *, wait: float, warn: Callable[[str], None]) -> Iterator[Sink]:
        """The sink; for a repository, its lock is held meanwhile (`wait`: for the lock)."""
        if self.zip is not None:
            yield self.zip
            return
        from odbox_backup import locks
        from odbox_backup.store import StoreError

        assert self.repository is not None
        store, repo_id = self.repository.store, self.repository.config.id
        with contextlib.ExitStack() as held:
            try:
                stale = held.enter_context(
                    locks.exclusive(store, "k8s-migrate pull", repo_id, wait=wait)
                )
            except StoreError as e:  # a repository that is not writable: pick another
                cause = e.__cause__
                if isinstance(cause, OSError) and cause.errno in NOT_WRITABLE:
                    raise UsageError(f"{e}; nothing was done") from e
                raise
            for lock in stale:
                warn(f"removed a stale lock: {lock.describe()}")
            yield RepoSink(self.repository, source_key)

    def close(self) -> None:
        """The zip's temporary file goes, unless the pull renamed it into place."""
        if self.zip is not None:
            self.zip.abort()

    def __enter__(self) -> Output:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
