"""The commands that read snapshots (list, show, tag, ls, dump, stats, diff): their Typer
layer. cli.py registers them on its app, in the order `--help` lists them."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from odbox_backup.cli_options import (
    AuthKeyFile,
    Debug,
    Identity,
    Json,
    PgBin,
    Repo,
    TagSelection,
    Wait,
    _locked,
    _open,
    _reading,
)
from odbox_backup.report import with_schema
from odbox_common import console, runner
from odbox_common.console import count_of
from odbox_common.console import human_size as _size
from odbox_common.errors import ToolError, UsageError

if TYPE_CHECKING:
    from odbox_backup.repository import Repository


def list_(repo: Repo, identity: Identity = None, auth_key: AuthKeyFile = None, json: Json = False,
          tag: TagSelection = None, debug: Debug = False) -> None:  # fmt: skip
    """List the snapshots (details need the identity of an encrypted repository)."""
    from odbox_backup import cache
    from odbox_backup.manifests import snapshot_time
    from odbox_backup.repository import Unauthenticated
    from odbox_backup.tags import matches, parse_selection, tags_of

    selection = parse_selection(tag or [])
    repository = _open(repo, identity, auth_key)
    if selection and repository.config.encrypted and not repository.identities:
        raise UsageError("--tag reads the tags in the encrypted manifests: pass --identity")
    rows = []
    details = not repository.config.encrypted or bool(repository.identities)
    # the manifests checked before, by their stored bytes' tag: only new ones are fetched
    listed = cache.Listed(cache.list_dir(), repository)
    for snapshot_id in repository.snapshot_ids():
        row = listed.row(snapshot_id, details)
        if row is None:
            row = {"id": snapshot_id, "time": snapshot_time(snapshot_id).isoformat()}
            try:
                repository.check_snapshot(snapshot_id)
            except Unauthenticated as e:
                console.warn(f"left out {e}")
                continue
            if details:
                m = repository.read_snapshot(snapshot_id)
                row |= {"host": m["host"], "mode": m["mode"], "database": m["database"]["name"],
                        "files": m["filestore"]["count"], "bytes": m["totals"]["bytes"],
                        "tags": tags_of(m)}  # fmt: skip
            listed.add(snapshot_id, row, details)
        if selection and not matches(row.get("tags", []), selection):
            continue
        rows.append(row)
    listed.save()
    if json:
        console.print_json(rows)
        return
    columns = ["id", "time", "host", "mode", "database", "files", "size", "tags"]
    console.table(
        f"snapshots in {repo}",
        columns,
        [[str(r["id"]), str(r["time"]), str(r.get("host", "?")), str(r.get("mode", "?")),
          str(r.get("database", "?")), str(r.get("files", "?")),
          _size(r["bytes"]) if "bytes" in r else "?",
          ",".join(r["tags"]) if "tags" in r else "?"] for r in rows],
    )  # fmt: skip


def show(
    repo: Repo,
    snapshot: Annotated[str, typer.Argument(help="A snapshot ID, a unique prefix, or latest.")],
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Show one snapshot's manifest."""
    repository = _open(repo, identity, auth_key)
    manifest = repository.read_snapshot(repository.resolve(snapshot), compact=False)
    if json:
        console.print_json(manifest)
        return
    db, fs, odoo = manifest["database"], manifest["filestore"], manifest["odoo"]
    console.table(
        f"snapshot {manifest['id']}",
        ["", ""],
        [["time", manifest["time"]], ["host", manifest["host"]], ["mode", manifest["mode"]],
         ["database", f"{db['name']} (PostgreSQL {db['pg_version']}), dump {_size(db['size'])}"],
         ["odoo", f"{odoo.get('version') or '?'}, {len(odoo.get('modules', {}))} modules"],
         ["filestore", f"{count_of(fs['count'], 'file')}, {_size(fs['bytes'])}"],
         ["tags", ", ".join(manifest.get("tags", [])) or "-"]],
    )  # fmt: skip


tag_app = runner.typer_app(
    "tag",
    "Add or remove a snapshot's tags (its manifest is written again).",
    subcommand=True,
)


TagNames = Annotated[list[str], typer.Argument(metavar="NAME...", help="The tags.")]


TagSnapshot = Annotated[str, typer.Argument(help="A snapshot ID, a unique prefix, or latest.")]


def _change_tags(repo: str, snapshot: str, identity: Path | None, auth_key: Path | None,
                 wait: float, json: bool, add: list[str], remove: list[str]) -> None:  # fmt: skip
    from odbox_backup.tags import change_tags, check_tags

    check_tags(add + remove)  # a bad name is refused before the repository is opened
    repository = _open(repo, identity, auth_key)
    with _locked(repository, "tag", wait):
        snapshot_id = repository.resolve(snapshot)
        tags, changed = change_tags(repository, snapshot_id, add, remove)
    if json:
        console.print_json(
            with_schema(
                {"snapshot": snapshot_id, "id": snapshot_id, "tags": tags, "changed": changed}
            )
        )
        return
    now = ", ".join(tags) or "none"
    console.say(f"snapshot {snapshot_id}: tags {now}" + ("" if changed else " (unchanged)"))


@tag_app.command("add")
def tag_add(repo: Repo, snapshot: TagSnapshot, names: TagNames, wait: Wait = 0,
            identity: Identity = None, auth_key: AuthKeyFile = None, json: Json = False,
            debug: Debug = False) -> None:  # fmt: skip
    """Add tags to a snapshot (prune --keep-tag NAME then keeps it)."""
    _change_tags(repo, snapshot, identity, auth_key, wait, json, names, [])


@tag_app.command("remove")
def tag_remove(repo: Repo, snapshot: TagSnapshot, names: TagNames, wait: Wait = 0,
               identity: Identity = None, auth_key: AuthKeyFile = None, json: Json = False,
               debug: Debug = False) -> None:  # fmt: skip
    """Remove tags from a snapshot."""
    _change_tags(repo, snapshot, identity, auth_key, wait, json, [], names)


ManifestPath = Annotated[
    str,
    typer.Argument(metavar="PATH", help="A file in the filestore, as ab/ab12… (ls: or a folder)."),
]


def ls(
    repo: Repo,
    snapshot: TagSnapshot,
    path: Annotated[
        str, typer.Argument(metavar="[PATH]", help="A file or folder (default: all).")
    ] = "",
    names: Annotated[
        bool,
        typer.Option("--names/--no-names",
                     help="The attachments of each file (name, model, res_id) from the dump's "
                     "ir_attachment rows; default: when the dump can be read."),
    ] = True,
    pg_bin: PgBin = None,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """List a snapshot's filestore files (and the attachments they are), without a restore."""
    from odbox_backup.browse import list_files, readable

    repository = _open(repo, identity, auth_key)
    snapshot_id = repository.resolve(snapshot)
    names = names and readable(repository)
    with _reading(repository, "ls"):
        entries = list_files(repository, snapshot_id, path, names=names, pg_bin=pg_bin)
    if json:
        console.print_json([e.to_json(names) for e in entries])
        return
    if not entries and path:
        raise ToolError(f"snapshot {snapshot_id} holds no {path!r} in its filestore")
    for e in entries:  # plain lines (no timestamp, whatever stdout is): for grep and awk
        described = "; ".join(a.describe() for a in e.attachments)
        extra = f"  {described or 'no attachment'}" if names else ""
        sys.stdout.write(f"{e.size:>12}  {e.path}{extra}\n")


def dump(
    repo: Repo,
    snapshot: TagSnapshot,
    path: ManifestPath,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write it here (0600, atomically), not stdout."),
    ] = None,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Write one filestore file of a snapshot to stdout or --out."""
    from odbox_backup.browse import atomic_file, manifest_text, one_entry, write_content

    repository = _open(repo, identity, auth_key)
    snapshot_id = repository.resolve(snapshot)
    with _reading(repository, "dump"):
        entry = one_entry(manifest_text(repository, snapshot_id), path, snapshot_id)
        if out is None:
            write_content(repository, entry, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        try:
            with atomic_file(out) as f:
                write_content(repository, entry, f)
        except OSError as e:
            raise ToolError(f"cannot write {out}: {e.strerror}") from e
    console.say(f"wrote {out}: {entry.path} of snapshot {snapshot_id}, {_size(entry.size)}",
                sys.stderr)  # fmt: skip


@contextlib.contextmanager
def _manifest_reader(
    repo: str, identity: Path | None, auth_key: Path | None, command: str
) -> Iterator[Repository]:
    """The repository, under a reader's lock, for a command that reads manifests."""
    repository = _open(repo, identity, auth_key)
    if repository.config.encrypted and not repository.identities:
        raise UsageError(f"{command} reads the encrypted manifests: pass --identity")
    with _reading(repository, command):
        yield repository


def stats(
    repo: Repo,
    snapshots: Annotated[
        list[str] | None, typer.Argument(help="Snapshots (IDs, prefixes, latest); default: all.")
    ] = None,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Raw and deduplicated sizes, per snapshot and in total, and the last 30 days' growth."""
    from odbox_backup.stats import stats as do_stats

    with _manifest_reader(repo, identity, auth_key, "stats") as repository:
        ids = [repository.resolve(s) for s in snapshots] if snapshots else repository.snapshot_ids()
        result = do_stats(repository, list(dict.fromkeys(ids)), warn=console.warn)
    if json:
        console.print_json(with_schema(result.to_json()))
        return
    console.table(
        f"snapshots in {repo}",
        ["id", "database", "files", "raw", "stored", "added", "tags"],
        [[r.id, r.database, str(r.files), _size(r.raw_bytes), _size(r.stored_bytes),
          _size(r.added_bytes), ",".join(r.tags)] for r in result.snapshots],
    )  # fmt: skip
    console.say(
        f"total: {_size(result.raw_bytes)} raw in {len(result.snapshots)} snapshots, "
        f"{_size(result.stored_bytes)} stored in {result.objects} objects "
        f"({result.ratio:.1f}x smaller); the repository takes {_size(result.repository_bytes)}"
    )
    console.say(
        f"last {result.growth_days} days: {result.growth_snapshots} snapshots added "
        f"{_size(result.growth_bytes)}"
    )


def diff(
    repo: Repo,
    old: Annotated[str, typer.Argument(metavar="ID1", help="The older snapshot (or latest…).")],
    new: Annotated[str, typer.Argument(metavar="ID2", help="The newer snapshot.")],
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Files added, removed and changed between two snapshots, and whether the dump changed."""
    from odbox_backup.stats import diff as do_diff

    with _manifest_reader(repo, identity, auth_key, "diff") as repository:
        result = do_diff(repository, repository.resolve(old), repository.resolve(new))
    if json:
        console.print_json(with_schema(result.to_json()))
        return
    for sign, changes in (("+", result.added), ("-", result.removed), ("M", result.changed)):
        for c in changes:
            sys.stdout.write(f"{sign} {c.path}  {_size(c.size)}\n")
    dump = (
        "the same dump (reused)"
        if result.dump_reused
        else f"a new dump ({result.dump_objects_new} chunks new, {result.dump_objects_shared} "
        f"shared; {_size(result.dump_bytes_old)} -> {_size(result.dump_bytes_new)})"
    )
    console.say(
        f"from {result.old} to {result.new}: {len(result.added)} files added, "
        f"{len(result.removed)} removed, {len(result.changed)} changed, {result.unchanged} "
        f"unchanged; {dump}"
    )
