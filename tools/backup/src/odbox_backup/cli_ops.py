"""The operators' commands of `odbox-backup` (status, notify, unlock, repair): their Typer layer,
kept out of cli.py so that file stays the backup commands'. cli.py imports this at its end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from odbox_backup.cli_options import AuthKeyFile, Debug, Identity, Json, Repo, _log, _open, app
from odbox_backup.report import with_schema
from odbox_common import console
from odbox_common.errors import ExitCode, UsageError

CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", envvar="ODBOX_BACKUP_CACHE", metavar="DIR",
                 help="The cache run keeps (default: $CACHE_DIRECTORY, else "
                 "~/.cache/odbox-backup): where the last results are."),
]  # fmt: skip


@app.command()
def status(
    repo: Repo,
    max_age: Annotated[
        str | None,
        typer.Option("--max-age", metavar="SPAN",
                     help="Exit 3 when a database's newest snapshot is older (26h, 90m, 1d12h), "
                     "or there is none."),
    ] = None,
    cache_dir: CacheDir = None,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Newest snapshot of each database and its age, the last results, the lock's holder."""
    from odbox_backup import cache
    from odbox_backup.status import human_age, parse_duration
    from odbox_backup.status import status as do_status

    span = parse_duration(max_age) if max_age is not None else None
    repository = _open(repo, identity, auth_key)
    result = do_status(repository, cache_dir or cache.default_dir(), max_age=span)
    if json:
        console.print_json(with_schema(result.to_json()))
    else:
        console.table(
            f"newest snapshots in {repo} ({result.snapshots} in all)",
            ["database", "snapshot", "age"],
            [[n.database or "(all: encrypted, no --identity)", n.snapshot, human_age(n.age)]
             for n in result.newest],
        )  # fmt: skip
        for command, last in sorted(result.last.items()):
            verdict = "ok" if last.get("ok") else f"FAILED (exit {last.get('exit_code')})"
            error = f": {last['error']}" if last.get("error") else ""
            console.say(f"last {command}: {verdict} at {last.get('finished')} on "
                        f"{last.get('host')}, {last.get('seconds')} s{error}")  # fmt: skip
        for lock, stale in result.locks:
            console.say(f"{'stale lock' if stale else 'locked'}: {lock.describe()}, "
                        f"mode {lock.mode}")  # fmt: skip
        if not result.locks:
            console.say("not locked")
        for snapshot_id in result.unauthenticated:
            console.warn(f"snapshot {snapshot_id} is not authenticated (see verify)")
    if result.stale:
        for line in result.stale:
            console.error(f"backups are stale: {line}")
        raise typer.Exit(int(ExitCode.PROBLEMS))


@app.command()
def notify(
    unit: Annotated[str, typer.Argument(help="The unit that failed (systemd's %i).")],
    mail_to: Annotated[
        list[str] | None,
        typer.Option("--mail-to", metavar="ADDRESS", help="Mail this address (repeat)."),
    ] = None,
    mail_from: Annotated[
        str | None, typer.Option("--mail-from", metavar="ADDRESS", help="The mail's sender.")
    ] = None,
    sendmail: Annotated[
        str, typer.Option("--sendmail", metavar="PATH", help="The sendmail to mail through.")
    ] = "sendmail",
    webhook_url_file: Annotated[
        Path | None,
        typer.Option("--webhook-url-file", metavar="FILE",
                     help="POST a JSON message to the URL this file holds (a secret: never "
                     "on the command line)."),
    ] = None,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Say that a unit failed: a mail, a webhook, or both (OnFailure= starts it)."""
    from odbox_backup.notify import message_for, post_webhook, send_mail

    if not mail_to and webhook_url_file is None:
        raise UsageError("give --mail-to ADDRESS, --webhook-url-file FILE, or both")
    message = message_for(unit)
    failures: list[Any] = []
    if webhook_url_file is not None:
        try:
            post_webhook(webhook_url_file, message)
            console.say(f"posted the failure of {unit} to the webhook in {webhook_url_file}")
        except Exception as e:  # the mail must still go
            failures.append(e)
    if mail_to:
        send_mail(sendmail, list(mail_to), message, mail_from)
        console.say(f"mailed the failure of {unit} to {', '.join(mail_to)}")
    if failures:
        raise failures[0]


@app.command()
def unlock(
    repo: Repo,
    remove_all: Annotated[
        bool,
        typer.Option("--remove-all",
                     help="Also remove locks that look live: other hosts' (whose processes "
                     "cannot be checked from here) and this host's running ones."),
    ] = False,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Remove stale locks (a killed run's on this host, or older than a day)."""
    from odbox_backup.repair import unlock as do_unlock
    from odbox_backup.report import SCHEMA

    repository = _open(repo, None, auth_key)
    result = do_unlock(repository, remove_all=remove_all)
    if json:
        console.print_json({"schema": SCHEMA, "repository": repository.store.url,
                            "removed": [lock.to_json() | {"live": live}
                                        for lock, live in result.removed],
                            "kept": [lock.to_json() for lock in result.kept]})  # fmt: skip
    say = _log(json)
    for lock, live in result.removed:
        if live:
            console.warn(f"removed the lock of {lock.describe()}, which may still be running: "
                         "if it is, it may now meet a prune")  # fmt: skip
        else:
            say(f"removed the stale lock of {lock.describe()}")
    for lock in result.kept:
        say(f"kept the live lock of {lock.describe()} (--remove-all removes it once "
                    "you know that run is gone)")  # fmt: skip
    if not result.removed and not result.kept:
        say(f"{repo} holds no lock")


repair_app = typer.Typer(help="Repair a repository.", no_args_is_help=True)
app.add_typer(repair_app, name="repair")


@repair_app.command("index")
def repair_index(
    repo: Repo,
    wait: Annotated[
        float, typer.Option("--wait", min=0, metavar="SECONDS", help="Wait this long for a lock.")
    ] = 0,
    identity: Identity = None,
    auth_key: AuthKeyFile = None,
    json: Json = False,
    debug: Debug = False,
) -> None:  # fmt: skip
    """Rebuild damaged or missing indexes from the packs and objects (needs the identity)."""
    from odbox_backup import locks
    from odbox_backup.repair import repair_index as do_repair

    repository = _open(repo, identity, auth_key)
    repository.require_writable()
    with locks.exclusive(repository.store, "odbox-backup repair index", repository.config.id,
                         wait=wait, mode="prune"):  # fmt: skip
        result = do_repair(repository, report=console.warn)
    if json:
        console.print_json(with_schema({
            "repository": repository.store.url, "packs_read": result.packs_read,
            "indexes_replaced": result.indexes_replaced, "indexes_written": result.indexes_written,
            "indexes_removed": result.indexes_removed, "objects_indexed": result.objects_indexed,
            "lost": list(result.lost),
        }))  # fmt: skip
        return
    console.say(
        f"repair index: read {result.packs_read} packs; {result.indexes_replaced} damaged "
        f"indexes rebuilt, {result.indexes_written} missing ones written, "
        f"{result.indexes_removed} removed, {result.objects_indexed} objects stored alone "
        f"indexed"
        + (f"; {len(result.lost)} could not be read back (see verify)" if result.lost else "")
    )
