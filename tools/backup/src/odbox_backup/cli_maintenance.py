"""The maintenance commands (verify, prune, copy): their Typer layer. cli.py registers them
on its app."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from odbox_backup.cli_options import (
    AuthKeyFile,
    Debug,
    Identity,
    Json,
    MetricsFile,
    Repo,
    Wait,
    _locked,
    _log,
    _open,
    _reading,
)
from odbox_backup.report import with_schema
from odbox_common import console
from odbox_common.console import count_of
from odbox_common.console import human_size as _size
from odbox_common.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from odbox_backup.repository import Repository


def verify(
    repo: Repo,
    snapshot: Annotated[
        str | None, typer.Argument(help="One snapshot (ID, prefix or latest); default: all.")
    ] = None,
    read_data: Annotated[
        bool,
        typer.Option("--read-data", help="Read every object and check its content and sizes."),
    ] = False,
    read_data_subset: Annotated[
        str | None,
        typer.Option(
            "--read-data-subset",
            metavar="N%|SIZE|n/t",
            help="--read-data of a part: N% or SIZE (500M) of the stored bytes, least "
            "recently read first, or the n-th of t fixed parts (restic's forms).",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            envvar="ODBOX_BACKUP_CACHE",
            metavar="DIR",
            help="Where --read-data-subset keeps what it read (default: as run's).",
        ),
    ] = None,
    wait: Wait = 0,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    metrics_file: MetricsFile = None,
    debug: Debug = False,
) -> None:
    """Check that every snapshot is whole (exit 3 when one is not)."""
    from odbox_backup import metrics
    from odbox_backup.verify import verify as do_verify
    from odbox_common.progress import progress_for

    metrics.begin("verify", repo, metrics_file, cache_dir)
    repository = _open(repo, identity, auth_key)
    rotation = _rotation(repository, read_data_subset, cache_dir)
    read_data = read_data or rotation is not None
    if read_data and repository.config.encrypted and not repository.identities:
        raise UsageError(
            "--read-data reads every object of this encrypted repository: pass --identity "
            "(without both, verify checks the MACs and that everything is there at its size)"
        )
    with _reading(repository, "verify", wait), progress_for(json) as progress:
        ids = [repository.resolve(snapshot)] if snapshot else repository.snapshot_ids()
        if read_data:
            progress.phase(f"reading the objects of {count_of(len(ids), 'snapshot')}")
        report = do_verify(repository, ids, read_data=read_data, progress=progress.advance,
                           subset=rotation)  # fmt: skip
    if rotation is not None and report.subset is not None:
        rotation.done(set(report.subset) - report.damaged_keys)
    metrics.note(last_bytes_read=report.bytes_read, snapshots=len(ids) if not snapshot else None,
                 problems=len(report.problems))  # fmt: skip
    if json:
        console.print_json(with_schema(report.to_json()))
    else:
        for problem in report.problems:
            console.warn(problem)
        verdict = "ok" if report.ok else f"{len(report.problems)} PROBLEMS"
        leftovers = f"{count_of(report.leftovers, 'temp file')}" + (
            f", {count_of(report.orphan_packs, 'pack')} a killed run left"
            if report.orphan_packs
            else ""
        )
        if report.keyless:
            authentic = sum(1 for s in report.snapshots if s.ok)
            console.say(
                f"verify {verdict}: {authentic} of {count_of(len(ids), 'snapshot')} authenticated, "
                f"{count_of(report.objects_referenced, 'object')} present at their sizes (without "
                f"--identity: no content read; {leftovers})"
            )
        else:
            what = "every object read and checked" if read_data else "every object present"
            if report.subset is not None:
                share = report.subset_bytes / report.stored_bytes if report.stored_bytes else 1
                what = (f"read {len(report.subset)} packs and objects alone, "
                        f"{_size(report.subset_bytes)} of {_size(report.stored_bytes)} "
                        f"({share:.1%}), {_size(report.bytes_read)} of content")  # fmt: skip
            console.say(
                f"verify {verdict}: {count_of(len(ids), 'snapshot')}, "
                f"{count_of(report.objects_referenced, 'object')} "
                f"({what}; {count_of(report.objects_unreferenced, 'unused object')}, {leftovers})"
            )
    if not report.ok:
        raise typer.Exit(int(ExitCode.PROBLEMS))


def _rotation(repository: Repository, spec: str | None, cache_dir: Path | None) -> Any:
    """`--read-data-subset`'s chooser, or None."""
    if spec is None:
        return None
    from odbox_backup import cache
    from odbox_backup.subset import Rotation, Subset

    return Rotation(Subset.parse(spec), cache_dir or cache.default_dir(), repository.store.url,
                    repository.config.id)  # fmt: skip


def _keep(kind: str) -> Any:
    return typer.Option(f"--keep-{kind}", min=0, metavar="N",
                        envvar=f"ODBOX_BACKUP_KEEP_{kind.upper()}",
                        help=f"Keep the newest snapshot of each of the last N {kind} periods."
                        if kind != "last" else "Keep the N newest snapshots.")  # fmt: skip


def _within(kind: str) -> Any:
    flag = f"--keep-within-{kind}" if kind else "--keep-within"
    unit = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month",
            "yearly": "year"}.get(kind)  # fmt: skip
    what = f"the newest snapshot of each {unit}" if unit else "every snapshot"
    return typer.Option(flag, metavar="DURATION",
                        envvar=flag.removeprefix("--").replace("-", "_").upper()
                        .replace("KEEP", "ODBOX_BACKUP_KEEP", 1),
                        help=f"Keep {what} among those less than DURATION (1y5m7d2h) older "
                        "than the newest.")  # fmt: skip


def prune(
    repo: Repo,
    keep_last: Annotated[int, _keep("last")] = 0,
    keep_hourly: Annotated[int, _keep("hourly")] = 0,
    keep_daily: Annotated[int, _keep("daily")] = 0,
    keep_weekly: Annotated[int, _keep("weekly")] = 0,
    keep_monthly: Annotated[int, _keep("monthly")] = 0,
    keep_yearly: Annotated[int, _keep("yearly")] = 0,
    keep_within: Annotated[str, _within("")] = "",
    keep_within_hourly: Annotated[str, _within("hourly")] = "",
    keep_within_daily: Annotated[str, _within("daily")] = "",
    keep_within_weekly: Annotated[str, _within("weekly")] = "",
    keep_within_monthly: Annotated[str, _within("monthly")] = "",
    keep_within_yearly: Annotated[str, _within("yearly")] = "",
    keep_tag: Annotated[
        list[str] | None,
        typer.Option("--keep-tag", metavar="A[,B…]", envvar="ODBOX_BACKUP_KEEP_TAG",
                     help="Keep every snapshot with all of these tags (repeat), whatever else."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would go; delete nothing.")
    ] = False,
    group_by: Annotated[
        str,
        typer.Option("--group-by", metavar="FIELDS",
                     help="Apply the policy to each group of snapshots with the same host, db, "
                     "tags or several (restic's --group-by); '' for one group."),
    ] = "host,db",
    wait: Wait = 0,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    metrics_file: MetricsFile = None,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Forget snapshots as restic's forget would for the same --keep-*, delete unused objects."""
    from odbox_backup import metrics

    metrics.begin("prune", repo, metrics_file)
    from odbox_backup.prune import Duration, Policy, explain, parse_group_by
    from odbox_backup.prune import prune as do_prune
    from odbox_backup.tags import parse_selection

    def within(text: str, kind: str = "") -> Duration:
        return (
            Duration.parse(text, f"--keep-within-{kind}" if kind else "--keep-within")
            if text
            else Duration()
        )

    policy = Policy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly,
                    tags=tuple(map(tuple, parse_selection(keep_tag or []))),
                    within=within(keep_within), within_hourly=within(keep_within_hourly, "hourly"),
                    within_daily=within(keep_within_daily, "daily"),
                    within_weekly=within(keep_within_weekly, "weekly"),
                    within_monthly=within(keep_within_monthly, "monthly"),
                    within_yearly=within(keep_within_yearly, "yearly"))  # fmt: skip
    fields = parse_group_by(group_by)
    repository = _open(repo, identity, auth_key)
    repository.require_writable()
    log = _log(json)
    with _locked(repository, "prune", wait):
        result = do_prune(repository, policy, dry_run=dry_run, report=log, group_by=fields)
    metrics.note(
        last_objects_deleted=0 if dry_run else result.objects_deleted,
        snapshots=len(result.decisions) - (0 if dry_run else len(result.forgotten)),
    )
    if json:
        console.print_json(with_schema({
            "dry_run": dry_run,
            "policy": policy.describe(),
            "group_by": list(fields),
            "snapshots": [{"id": d.id, "group": d.group, "keep": d.keep, "reasons": d.reasons}
                          for d in result.decisions],
            "unauthenticated": result.unauthenticated,
            "forgotten": result.forgotten,
            "objects_deleted": result.objects_deleted,
            "packs_rewritten": result.packs_rewritten,
        }))  # fmt: skip
        return
    console.table(f"{policy.describe()}{' (dry run)' if dry_run else ''}",
                  ["id", "time", "group", "action", "reasons"],
                  explain(result.decisions))  # fmt: skip
    verb = "would forget" if dry_run else "forgot"
    console.say(
        f"{verb} {len(result.forgotten)} of {count_of(len(result.decisions), 'snapshot')} and "
        f"{'would delete' if dry_run else 'deleted'} "
        f"{count_of(result.objects_deleted, 'unused object')}"
        + (
            f" ({'would rewrite' if dry_run else 'rewrote'} "
            f"{count_of(result.packs_rewritten, 'pack')})"
            if result.packs_rewritten
            else ""
        )
    )


def copy(
    repo: Repo,
    snapshots: Annotated[
        list[str], typer.Argument(help="Snapshots to copy (IDs, prefixes, latest, or all).")
    ],
    to: Annotated[str, typer.Option("--to", metavar="REPO", help="The destination repository.")],
    wait: Wait = 0,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    to_auth_key: Annotated[
        Path | None,
        typer.Option("--to-auth-key-file", envvar="ODBOX_BACKUP_TO_AUTH_KEY_FILE", metavar="FILE",
                     help="The destination's authentication key (default: --auth-key-file's)."),
    ] = None,
    limit_upload: Annotated[
        int | None,
        typer.Option("--limit-upload", min=1, metavar="KiB/s",
                     help="Send the destination at most this many KiB a second (restic's flag)."),
    ] = None,
    json: Json = False,
    metrics_file: MetricsFile = None,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Copy snapshots into another repository (offsite), sending only what it lacks."""
    from odbox_backup import metrics
    from odbox_backup.copy import copy_snapshot
    from odbox_backup.report import SCHEMA, progress_for

    metrics.begin("copy", to, metrics_file)
    sent = 0

    source = _open(repo, identity, auth_key)
    destination = _open(to, None, to_auth_key or auth_key)
    destination.require_writable()
    if limit_upload is not None:
        from odbox_backup.store import limit_uploads

        limit_uploads(destination.store, limit_upload)
    if destination.config.id == source.config.id:
        raise UsageError("--to names the repository itself")
    ids = source.snapshot_ids() if snapshots == ["all"] else [source.resolve(s) for s in snapshots]
    log, copied = _log(json), []
    with _reading(source, "copy", wait), _locked(destination, "copy", wait):
        for snapshot_id in dict.fromkeys(ids):
            with progress_for(json) as progress:
                done = copy_snapshot(source, destination, snapshot_id, progress)
            sent += done.bytes_sent
            copied.append(done)
            if done.already_there:
                log(f"snapshot {snapshot_id} is already in {to}")
            else:
                log(f"copied snapshot {snapshot_id} to {to}: "
                    f"{count_of(done.objects_sent, 'object')}, "
                    f"{_size(done.bytes_sent)} sent")  # fmt: skip
    metrics.note(last_bytes_added=sent, snapshots=len(destination.snapshot_ids()))
    if json:
        console.print_json({
            "schema": SCHEMA, "repository": source.store.url, "to": destination.store.url,
            "snapshots": [{"snapshot": d.snapshot, "copied": not d.already_there,
                           "objects_sent": d.objects_sent, "bytes_sent": d.bytes_sent}
                          for d in copied],
            "objects_sent": sum(d.objects_sent for d in copied), "bytes_sent": sent,
        })  # fmt: skip
