"""What every `vaultgen` command shares: the app they are registered on, the options that
go before or after the command, and reporting what a run wrote. Only typer and the
standard library at the top, so `--help` stays fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from odbox_common import console, runner
from odbox_common.console import count_of
from odbox_common.errors import ToolError as VaultError

if TYPE_CHECKING:
    from vaultgen.plans import Plan, Request


app = runner.typer_app(
    "vaultgen",
    (
        "An age-encrypted secrets vault that is safe to commit: passwords and their crypt "
        "hashes, a CA and TLS certificates, an SSH identity.\n\n"
        "Without a command, runs `generate`. Exit codes: 0 ok, 1 failed, 2 usage, "
        "3 check found problems, 4 another run holds the vault."
    ),
)

BATCH_HELP = (
    "Never prompt: every missing password becomes a generated passphrase. "
    "Implied when standard input is not a terminal."
)


IDENTITY_HELP = (
    "Decrypt with this identity instead of the vault's age.key: your own age key or SSH "
    "private key, listed in recipients.txt (passphrase-protected ones are asked for on the "
    "terminal, as age does)."
)
IdentityOption = Annotated[
    Path | None,
    typer.Option("--identity", metavar="FILE", envvar="VAULTGEN_IDENTITY", help=IDENTITY_HELP),
]


@dataclass(frozen=True)
class Settings:
    vault: Path
    identity: Path | None = None


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def _ask_password(name: str) -> str | None:
    import getpass

    first = getpass.getpass(f"Password for {name} (empty: generate a passphrase): ")
    if not first:
        return None
    if getpass.getpass(f"Password for {name}, again: ") != first:
        raise VaultError(f"the two passwords for {name} differ; nothing was changed")
    return first


def _identity(ctx: typer.Context, given: Path | None) -> Path | None:
    """A command's --identity, else the one before the command."""
    return given or _settings(ctx).identity


def _run_generate(
    ctx: typer.Context, request: Request, identity: Path | None, json_output: bool
) -> None:
    from vaultgen.generate import generate as run_generate

    root = _settings(ctx).vault
    request.identity_file = _identity(ctx, identity)
    _report(root, run_generate(root, request), json_output)


def _short(recipient: str) -> str:
    """age and ed25519 keys in full; an RSA key's 500 characters by their two ends."""
    return recipient if len(recipient) <= 100 else f"{recipient[:40]}…{recipient[-24:]}"


def _say_recipients(recipients: list[str]) -> None:
    """recipients.txt and manifest.json's identity are committed files: a line someone pushed
    there gets every secret on the next run, so a new set is always shown."""
    console.warn(
        f"every .age file is now encrypted to {count_of(len(recipients), 'recipient')}: check that "
        f"each is meant to read every secret: {', '.join(map(_short, recipients))}"
    )


def _report(root: Path, plan: Plan, json_output: bool) -> None:
    """A line for each file written; under --json on stderr, and the document on stdout."""
    if plan.recipients_changed:
        _say_recipients(plan.recipients)
    with console.json_output(json_output):
        for w in plan.writes:
            console.say(f"{w.action} {root / w.path}" + (f" ({w.reason})" if w.existed else ""))
        for c in plan.chmods:
            console.say(f"tightened {root / c.path} to {c.mode:04o} ({c.reason})")
        if plan.empty:
            console.say(f"{root} is up to date")
    if json_output:
        console.print_json(plan.to_json())


JSON_HELP = "Print one JSON document of what was done (the lines go to stderr)."
Json = Annotated[bool, typer.Option("--json", help=JSON_HELP)]


ACCEPT_AGE_HELP = (
    "Accept this .age file although manifest.json does not record it (you wrote it "
    "with age yourself); repeatable. Without it such a file stops the run: it may be forged."
)
AcceptAge = Annotated[
    list[Path] | None, typer.Option("--accept-age", metavar="FILE", help=ACCEPT_AGE_HELP)
]


def _vault_relative(root: Path, files: list[Path] | None) -> tuple[str, ...]:
    """`vault/passwords/x.txt.age` or `passwords/x.txt.age`: the path inside the vault."""
    result = []
    for file in files or []:
        try:
            result.append(file.resolve().relative_to(root.resolve()).as_posix())
        except ValueError:
            result.append(file.as_posix())
    return tuple(result)
