"""`vaultgen` commands that read the vault: check, status, decrypt, graph.

Each command imports the module that does its work, so `--help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from odbox_common import console, runner
from odbox_common.console import count_of
from odbox_common.errors import ExitCode, UsageError
from odbox_common.errors import ToolError as VaultError
from vaultgen.cli_options import IdentityOption, _identity, _settings, app


@app.command(
    epilog=runner.examples(
        ("everything a vault should be; exit 3 on problems", "vaultgen --vault secrets check"),
        (
            "as a teammate, with your own key",
            "vaultgen check --vault secrets --identity ~/.ssh/id_ed25519",
        ),
        ("for CI", "vaultgen --vault secrets check --json"),
    ),
)
def check(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    identity: IdentityOption = None,
) -> None:
    """Audit the vault: decryption, hashes, certificates, keys, modes, what git commits.

    Trusts no cache. Exit 3 when anything is wrong.
    """
    from vaultgen import layout
    from vaultgen.check import check as run_check
    from vaultgen.files import refuse_if_being_written

    root = _settings(ctx).vault
    layout.require_vault(root)
    refuse_if_being_written(root)
    report = run_check(root, _identity(ctx, identity))
    if json_output:
        console.print_json(report.to_json())
    else:
        for note in report.notes:
            console.say(f"note: {note}")
        if report.ok:
            console.say(f"{report.vault}: {count_of(report.checked, 'file')} checked, no problems")
        else:
            count = len(report.problems)
            console.table(
                f"{report.vault}: {count_of(count, 'problem')} "
                f"in {count_of(report.checked, 'file')}",
                ["file", "problem"],
                [[p.path, p.problem] for p in report.problems],
            )
    if not report.ok:
        raise typer.Exit(ExitCode.PROBLEMS)


@app.command(
    epilog=runner.examples(
        ("what generate would make or remake, and why", "vaultgen --vault secrets status"),
    ),
)
def status(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    identity: IdentityOption = None,
) -> None:
    """Show every file of the vault: ok, missing or stale (and why). Changes nothing."""
    from vaultgen import layout
    from vaultgen.files import refuse_if_being_written
    from vaultgen.generate import plan_only

    root = _settings(ctx).vault
    layout.require_vault(root)
    refuse_if_being_written(root)
    statuses = plan_only(root, _identity(ctx, identity)).statuses()
    if json_output:
        console.print_json(
            {
                "schema": 1,
                "vault": str(root),
                "up_to_date": all(s.state == "ok" for s in statuses),
                "files": [{"path": s.path, "state": s.state, "reason": s.reason} for s in statuses],
            }
        )
        return
    console.table(
        str(root), ["file", "state", "why"], [[s.path, s.state, s.reason] for s in statuses]
    )


def _parse_mode(value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise UsageError(
            f"invalid value for '--mode': {value!r} is not an octal file mode such as 0400"
        )
    return mode


def _check_out_target(out: Path) -> None:
    """--out replaces a regular file or makes a new one; never a folder, device or link."""
    if out.is_symlink():
        raise VaultError(f"{out} is a symbolic link: give --out the real path")
    if out.is_dir():
        raise VaultError(f"{out} is a folder: give --out a file name")
    if out.exists() and not out.is_file():
        raise VaultError(f"{out} is not a regular file (a device?): give --out a file name")
    if not out.parent.is_dir():
        raise VaultError(f"{out.parent} does not exist: create the folder first")


@app.command(
    epilog=runner.examples(
        (
            "one secret to standard output",
            "vaultgen --vault secrets decrypt passwords/odoo-admin.txt.age",
        ),
        (
            "on the box, with its SSH host key, to a file only root reads",
            "vaultgen decrypt secrets/passwords/odoo-admin.txt.age "
            "--identity /etc/ssh/ssh_host_ed25519_key --out /run/secrets/odoo-admin --mode 0400",
        ),
    ),
)
def decrypt(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="A .age file; relative paths are also looked up in the vault."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="FILE", help="Write here (atomically) instead of standard output."
        ),
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="File mode for --out, in octal.")] = "0600",
    identity: Annotated[
        Path | None,
        typer.Option(
            "--identity",
            metavar="FILE",
            help="Decrypt with this age identity file or SSH private key (e.g. the host's "
            "/etc/ssh/ssh_host_ed25519_key) instead of the vault's age.key.",
        ),
    ] = None,
) -> None:
    """Decrypt one .age file to standard output, or to --out with a mode (for activation)."""
    from odbox_common import age
    from vaultgen import agecrypt, layout
    from vaultgen.files import write_atomic

    file_mode = _parse_mode(mode)
    if out is not None:
        _check_out_target(out)
    root = _settings(ctx).vault
    source = file if file.exists() or file.is_absolute() else root / file
    try:
        data = source.read_bytes()
    except OSError as e:
        raise VaultError(f"cannot read {file}: {e.strerror}") from e
    identities = agecrypt.load_identity_file(_identity(ctx, identity) or root / layout.IDENTITY)
    plain = age.decrypt(data, identities, str(source))
    if out is None:
        sys.stdout.buffer.write(plain)
        sys.stdout.buffer.flush()
    else:
        write_atomic(out, plain, file_mode)


@app.command(
    epilog=runner.examples(
        (
            "the dependency graph as an SVG",
            "vaultgen --vault secrets graph | dot -Tsvg > vault.svg",
        ),
    ),
)
def graph(ctx: typer.Context) -> None:
    """Print the vault's dependency graph in Graphviz DOT (pipe it to `dot -Tsvg`)."""
    from vaultgen import layout
    from vaultgen.graph import dot

    root = _settings(ctx).vault
    layout.require_vault(root)
    sys.stdout.write(dot(root))
