"""`odbox-backup recipients list|add|remove|rewrap`: who can read the repository (its Typer
layer; the work is in rekey.py). cli.py imports this at its end."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from odbox_backup.cli_options import AuthKeyFile, Debug, Identity, Json, Repo, Wait, _open, app
from odbox_backup.report import with_schema
from odbox_common import console, runner
from odbox_common.errors import UsageError

recipients_app = runner.typer_app(
    "recipients",
    "Who can read the repository: list, add or remove age recipients. add and remove "
    "rewrap every manifest, pack and object to the new set (their payload kept), so old "
    "snapshots become readable by the new set and no longer by a removed key.",
    subcommand=True,
)
app.add_typer(recipients_app, name="recipients")
Keys = Annotated[
    list[str] | None,
    typer.Argument(metavar="RECIPIENT...",
                   help="age1…, or an ssh-ed25519/ssh-rsa public key (quote it)."),
]  # fmt: skip
KeysFile = Annotated[
    Path | None,
    typer.Option("--recipients-file", "-R", metavar="FILE",
                 help="Recipients one a line (# comments), as age -R reads them."),
]  # fmt: skip


@recipients_app.command("list")
def recipients_list(repo: Repo, auth_key: AuthKeyFile = None, json: Json = False,
                    debug: Debug = False) -> None:  # fmt: skip
    """The recipients new snapshots are encrypted to (config.json's, authenticated)."""
    from odbox_common.age import parse_recipient, recipients_fingerprint

    repository = _open(repo, None, auth_key)
    keys = list(repository.config.recipients)
    fingerprint = recipients_fingerprint([parse_recipient(k, "config.json") for k in keys])
    if json:
        console.print_json(with_schema({"recipients": keys, "fingerprint": fingerprint}))
        return
    for key in keys:
        console.say(key)
    console.say(f"{len(keys)} recipient{'s' if len(keys) != 1 else ''}, {fingerprint}")


def _rekey(repo: str, identity: Path | None, auth_key: Path | None, wait: float, json: bool,
           add: list[str], remove: list[str]) -> None:  # fmt: skip
    from odbox_backup import locks
    from odbox_backup.rekey import new_recipients, rekey
    from odbox_backup.rewrap import unwrappers

    if identity is None:
        raise UsageError(
            "rewrapping needs a key that reads the repository now: pass --identity "
            "(ODBOX_BACKUP_IDENTITY)"
        )
    try:
        keys = unwrappers(identity.read_bytes(), str(identity))
    except OSError as e:
        raise UsageError(f"cannot read the identity {identity}: {e.strerror}") from e
    repository = _open(repo, None, auth_key)
    target = new_recipients(repository.config.recipients, add, remove)
    say = (lambda text: console.say(text, sys.stderr)) if json else console.say
    with locks.exclusive(repository.store, "odbox-backup recipients", repository.config.id,
                         wait=wait, mode="prune") as stale:  # fmt: skip
        for lock in stale:
            console.warn(f"removed a stale lock: {lock.describe()}")
        result = rekey(repository, keys, target, say)
    if json:
        console.print_json(with_schema(result.to_json()))
        return
    share = result.header_bytes / result.bytes_written if result.bytes_written else 0
    console.say(
        f"rewrapped {result.snapshots} manifests, {result.packs} packs and {result.objects} "
        f"objects to {len(target)} recipients in {result.seconds:.1f} s: "
        f"{console.human_size(result.bytes_written)} written, of which "
        f"{console.human_size(result.header_bytes)} new headers ({share:.2%})"
    )
    for key in result.added:
        console.say(f"added {key}")
    for key in result.removed:
        console.say(f"removed {key}")


def _given(keys: list[str] | None, keys_file: Path | None) -> list[str]:
    given = list(keys or [])
    if keys_file is not None:
        try:
            given += keys_file.read_text().splitlines()
        except OSError as e:
            raise UsageError(f"cannot read {keys_file}: {e.strerror}") from e
    if not given:
        raise UsageError("name at least one recipient (or -R FILE)")
    return given


@recipients_app.command("add")
def recipients_add(repo: Repo, keys: Keys = None, keys_file: KeysFile = None,
                   identity: Identity = None, auth_key: AuthKeyFile = None, wait: Wait = 0,
                   json: Json = False, debug: Debug = False) -> None:  # fmt: skip
    """Add recipients: every snapshot, old ones too, becomes readable by them."""
    _rekey(repo, identity, auth_key, wait, json, _given(keys, keys_file), [])


@recipients_app.command("remove")
def recipients_remove(repo: Repo, keys: Keys = None, keys_file: KeysFile = None,
                      add: Annotated[list[str] | None, typer.Option(
                          "--add", metavar="RECIPIENT", help="Add this one in the same pass.")
                      ] = None,
                      identity: Identity = None, auth_key: AuthKeyFile = None, wait: Wait = 0,
                      json: Json = False, debug: Debug = False) -> None:  # fmt: skip
    """Remove recipients (a departing admin, a leaked key): no file stays readable by them."""
    _rekey(repo, identity, auth_key, wait, json, list(add or []), _given(keys, keys_file))


@recipients_app.command("rewrap")
def recipients_rewrap(repo: Repo, identity: Identity = None, auth_key: AuthKeyFile = None,
                      wait: Wait = 0, json: Json = False,
                      debug: Debug = False) -> None:  # fmt: skip
    """Rewrap every file to the recipients config.json names: finishes a rotation that was
    interrupted."""
    _rekey(repo, identity, auth_key, wait, json, [], [])
