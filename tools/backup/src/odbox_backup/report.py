"""The `--json` documents of the commands that report a result (init, run, copy, import,
export, restore, drop-previous), and where their log goes meanwhile.

Every document is one JSON object on stdout with a `schema` version: a key added keeps
it, one renamed, removed or changed in meaning makes it 2. Every key is always there (null
when the command does not know it, as for a restore `--resume`), and a thing has the name
`list`, `verify` and `status --json` give it: `repository` (the store's URL), `snapshot` (an
ID), `database`, `files`, `bytes`, `objects`. Under `--json` the log lines go to stderr, so
`json.loads(stdout)` reads the whole of stdout.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from odbox_common import console

if TYPE_CHECKING:
    from pathlib import Path

    from odbox_backup.previous import Previous
    from odbox_backup.repository import Repository
    from odbox_backup.restore import Restored
    from odbox_backup.swap import Swap
    from odbox_common.progress import Progress

SCHEMA = 1


def with_schema(document: dict[str, Any]) -> dict[str, Any]:
    """A report's document (verify, prune, status, stats, diff, tag, repair, recipients) with
    the `schema` key first, as the documents above carry it."""
    return {"schema": SCHEMA, **document}


@contextlib.contextmanager
def progress_for(json: bool) -> Iterator[Progress]:
    """odbox_common's display (rows on a terminal, lines in the journal); under --json, each
    phase's line on stderr instead (no running figures: stdout is the document's)."""
    # Imported here, not at the top: the command modules import this one for `with_schema`,
    # and `--help` loads nothing it does not need.
    from odbox_common.progress import Progress
    from odbox_common.progress import progress_for as display

    if not json:
        with display() as progress:
            yield progress
        return
    yield Progress(phase=lambda text, total=None: console.say(text, sys.stderr))


def snapshot_made(
    repo: Repository, manifest: dict[str, Any], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`run --json` and `import --json`: the snapshot written and what writing it took.
    `bytes` and `bytes_read` are the one figure `list` shows, what the run read (a file read
    twice counts twice); `bytes_added` what it stored that the repository lacked;
    `dump.reused` (as `diff --json` names it) is true when the database had not changed
    since `previous` and its dump was taken over (null for an import)."""
    totals, filestore = manifest["totals"], manifest["filestore"]
    reused = None
    if manifest.get("source", "run") == "run":
        reused = previous is not None and previous.get("database") == manifest["database"]
    return {
        "schema": SCHEMA,
        "repository": repo.store.url,
        "snapshot": manifest["id"],
        "time": manifest["time"],
        "host": manifest.get("host"),
        "mode": manifest.get("mode"),
        "database": manifest["database"]["name"],
        "tags": manifest.get("tags", []),
        "files": filestore["count"],
        "bytes": totals["bytes"],  # as `list --json` gives it
        "bytes_read": totals["bytes"],
        "bytes_added": totals["new_bytes"],
        "objects": {
            "total": totals["objects"],
            "new": totals["new_objects"],
            "reused": totals["objects"] - totals["new_objects"],
        },
        "dump": {"reused": reused, "bytes": manifest["database"]["size"]},
        "seconds": totals.get("seconds"),
        "attachments": {
            "missing": filestore.get("missing"),
            "first_missing": filestore.get("missing_first"),
        },
    }


def restore_done(
    action: str,
    snapshot: str,
    database: str | None,
    filestore: str,
    *,
    repository: str | None = None,
    previous: tuple[str | None, str | None] = (None, None),
    **known: Any,
) -> dict[str, Any]:
    """`restore --json`, one shape whatever `action` it took (`restore`, `resume`, `undo`,
    `only`): what an action does not know is null."""
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "action": action,
        "repository": repository,
        "snapshot": snapshot,
        "database": database,
        "filestore": filestore,
        "previous": {"database": previous[0], "filestore": previous[1]},
        "files": None,
        "bytes": None,
        "attachments": {"checked": None, "missing": None, "first_missing": None},
        "written": None,
        "unchanged": None,
    }
    if unknown := set(known) - set(document):  # a new key is added above first, null
        raise TypeError(f"restore_done() has no key {sorted(unknown)}")
    return document | known


def restored(repo: Repository, done: Restored) -> dict[str, Any]:
    previous = str(done.previous_filestore) if done.previous_filestore else None
    attachments = {"checked": done.attachments_checked, "missing": done.attachments_missing,
                   "first_missing": done.attachments_first_missing or None}  # fmt: skip
    return restore_done("restore", done.snapshot, done.db, str(done.filestore),
                        repository=repo.store.url, previous=(done.previous_db, previous),
                        files=done.files, bytes=done.bytes, attachments=attachments)  # fmt: skip


def swap_taken(plan: Swap, action: str) -> dict[str, Any]:
    """`restore --resume` (the previous copies kept under their names) or `--undo` (they are
    the live ones again: no previous copy)."""
    previous = (plan.previous_db, plan.previous_folder) if action == "resume" else (None, None)
    return restore_done(action, plan.snapshot, plan.db, plan.folder, previous=previous)


def files_restored(repo: Repository, snapshot: str, filestore: Path, done: Any) -> dict[str, Any]:
    """`restore --only`: the files written and those left alone (already as in the snapshot)."""
    return restore_done("only", snapshot, None, str(filestore), repository=repo.store.url,
                        files=len(done.written), written=list(done.written),
                        unchanged=list(done.unchanged))  # fmt: skip


def dropped(db: str, filestore: Path, previous: Previous, dry_run: bool) -> dict[str, Any]:
    """`drop-previous --json`: the copies dropped (or, with --dry-run, that would be), the
    sessions that held them, and the `_restore_` databases left alone (a restore writes them)."""
    return {
        "schema": SCHEMA,
        "database": db,
        "filestore": str(filestore),
        "dry_run": dry_run,
        "dropped": not dry_run and bool(previous.databases or previous.folders),
        "databases": previous.databases,
        "folders": [str(f) for f in previous.folders],
        "sessions": previous.sessions,
        "in_use": previous.in_use,
    }
