"""What the last run on this machine stored, kept next to the data rather than in the repository.

The box writes to a repository encrypted to keys it does not hold, so it
cannot read its own previous manifest. Without one, every run would read
every filestore file again and dump an unchanged database again. So after
each run the box keeps, in its cache folder, the last snapshot's database
part, a path → (size, objects) index of its filestore, and the object that
holds its attachments' names (reused with an unchanged dump): nothing the
filestore's own names and the database do not already tell, on the machine
that holds both.

The cache only saves work; it is never trusted for content. An entry is used
only when its snapshot is still in the repository and every object it names
is still stored (a pruned or damaged repository just costs a full read).

Folder: `--cache-dir` (`ODBOX_BACKUP_CACHE`), else systemd's
`$CACHE_DIRECTORY`, else `$XDG_CACHE_HOME/odbox-backup`, else
`~/.cache/odbox-backup`. One file per repository, `<repository id>.jsonl`,
written to a temporary name and renamed.

`list` keeps its own file there, `<repository id>.list.json` (`Listed`): the rows
of the manifests it checked, so that the next `list` fetches only new ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from odbox_backup.manifests import JSONTexts, entry_text
from odbox_backup.repository import Repository

VERSION = 3  # 3: entries path first
LIST_VERSION = 1


def default_dir() -> Path:
    systemd = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "odbox-backup" if xdg else Path.home() / ".cache" / "odbox-backup"


def list_dir() -> Path:
    """`list`'s folder: run's (it has no --cache-dir of its own)."""
    chosen = os.environ.get("ODBOX_BACKUP_CACHE")
    return Path(chosen) if chosen else default_dir()


def _path(folder: Path, repo: Repository) -> Path:
    return folder / f"{repo.config.id}.jsonl"


def load(folder: Path, repo: Repository) -> dict[str, Any] | None:
    """The last run's manifest parts, if still usable against `repo`; else None."""
    from odbox_backup.backup import entry_path

    try:
        with _path(folder, repo).open() as f:
            header = json.loads(f.readline())
            if header.get("version") != VERSION or header.get("repository") != repo.config.id:
                return None
            if header["id"] not in repo.snapshot_ids():
                return None
            files = JSONTexts(line.rstrip("\n") for line in f)
        for text in files:
            entry_path(text)  # a damaged line makes the whole cache unused, not the run fail
        return {"id": header["id"], "database": header["database"],
                "filestore": {"files": files, "bytes": header.get("filestore_bytes"),
                              "names": header.get("filestore_names")}}  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save(folder: Path, repo: Repository, manifest: dict[str, Any]) -> str | None:
    """Keep `manifest`'s parts for the next run; a reason when that was not possible.

    The file is JSON lines: a header (version, repository, snapshot ID, the `database`
    part, the filestore's bytes and its `names` part), then one `filestore.files` entry per
    line, written as they are."""
    header = {
        "version": VERSION,
        "repository": repo.config.id,
        "id": manifest["id"],
        "database": manifest["database"],
        "filestore_bytes": manifest["filestore"].get("bytes"),  # the next run's progress total
        "filestore_names": manifest["filestore"].get("names"),  # reused with the dump
    }
    files = manifest["filestore"]["files"]
    target = _path(folder, repo)
    tmp = target.with_name(f"{target.name}.tmp-{secrets.token_hex(4)}")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):  # one made before this version, or by hand
            folder.chmod(0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w") as f:  # written line by line: no whole copy in memory
            f.write(json.dumps(header, separators=(",", ":")) + "\n")
            for start in range(0, len(files), 2000):
                f.writelines(f"{_text(entry)}\n" for entry in files[start : start + 2000])
        tmp.replace(target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        return (
            f"cannot keep the run's index in {folder} ({e.strerror or e}): "
            "the next run reads everything again"
        )
    for stale in folder.glob(f"{repo.config.id}.json"):  # version 1's file
        stale.unlink(missing_ok=True)
    return None


def _text(entry: str | dict[str, Any]) -> str:
    if isinstance(entry, str):
        return entry
    return entry_text(entry["path"], entry["size"], entry["objects"])


class Listed:
    """`list`'s rows of the snapshots whose manifest it checked (its MAC; read too, when it
    could be), each under the manifest's ID and the tag of its stored bytes (S3's ETag
    from the listing, a local file's size and time: `Store.tags`). The next `list` takes
    the row of an ID whose tag is the same and fetches only new or rewritten manifests (on
    S3, with many snapshots, a GET each was most of its time).

    Only saves work, like the run's cache: a row counts for the same repository and key
    only (the config's ID and key check), a rewritten manifest is checked again, and
    whatever is wrong with the file makes `list` check everything. `restore`, `verify` and
    `show` never use it: they read and check the manifest itself."""

    def __init__(self, folder: Path | None, repo: Repository) -> None:
        self.folder, self.repo = folder, repo
        self.owner = [LIST_VERSION, repo.config.id, repo.config.key_check]
        self.tags = {k.rsplit("/", 1)[1]: t for k, t in repo.store.tags("snapshots")}
        self.kept: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        if folder is None:
            return
        try:
            document = json.loads((folder / f"{repo.config.id}.list.json").read_text())
            if document["owner"] == self.owner:
                self.kept = {str(k): dict(v) for k, v in document["rows"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.kept = {}

    def row(self, snapshot_id: str, details: bool) -> dict[str, Any] | None:
        """The row kept for this manifest as it is stored now (with its details when
        `details`: read with the identity, or not encrypted), else None."""
        kept = self.kept.get(snapshot_id)
        if kept is None or kept.get("tag") != self.tags.get(snapshot_id, "-"):
            return None
        if details and not kept.get("details"):
            return None
        self.rows[snapshot_id] = kept
        row = dict(kept["row"])
        return row if details else {k: row[k] for k in ("id", "time") if k in row}

    def add(self, snapshot_id: str, row: dict[str, Any], details: bool) -> None:
        """The row of a manifest just checked (read, with `details`)."""
        if snapshot_id in self.tags:
            self.rows[snapshot_id] = {"tag": self.tags[snapshot_id], "details": details,
                                      "row": row}  # fmt: skip

    def save(self) -> None:
        """Keep the rows of the snapshots listed now (those pruned since go); never fails."""
        if self.folder is None or self.rows == self.kept:
            return
        target = self.folder / f"{self.repo.config.id}.list.json"
        tmp = target.with_name(f"{target.name}.tmp-{secrets.token_hex(4)}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "w") as f:
                json.dump({"owner": self.owner, "rows": self.rows}, f, separators=(",", ":"))
            tmp.replace(target)
        except OSError:
            tmp.unlink(missing_ok=True)
