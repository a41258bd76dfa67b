"""The `vaultgen` command line: parses arguments and prints; the work is in the other modules.

The commands live in cli_make (generate, password, edit, certs, import, rekey) and
cli_read (check, status, decrypt, graph), registered on cli_options' app in that order,
the order `--help` lists them. Only typer and the standard library are imported at the
top, so `--help` is fast; each command imports what it needs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from odbox_common import runner
from vaultgen import __version__, cli_make, cli_read
from vaultgen.cli_options import BATCH_HELP, IdentityOption, Settings, app

# cli_make before cli_read: the order --help lists the commands in.
__all__ = ["app", "cli_make", "cli_read", "main", "run"]


@app.callback(invoke_without_command=True)
def main_options(
    ctx: typer.Context,
    vault: Annotated[
        Path,
        typer.Option(
            "--vault",
            envvar="VAULTGEN_VAULT",
            metavar="DIR",
            help="The vault folder. Relative paths are taken from the current directory.",
        ),
    ] = Path("vault"),
    batch: Annotated[bool, typer.Option("--batch", help=f"For `generate`: {BATCH_HELP}")] = False,
    identity: IdentityOption = None,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="ODBOX_VAULTGEN_DEBUG", help="Show a traceback on errors."),
    ] = False,
    version: Annotated[
        bool,
        runner.version_option("vaultgen", __version__),
    ] = False,
) -> None:
    ctx.obj = Settings(vault=vault, identity=identity)
    if ctx.invoked_subcommand is None:
        cli_make.generate(ctx, batch=batch, accept_age=None, identity=None, json_output=False)


def run(argv: list[str]) -> int:
    """Run the command line; every failure becomes one line on stderr and an exit code."""
    return runner.run(
        app,
        argv,
        prog="vaultgen",
        debug_env="ODBOX_VAULTGEN_DEBUG",
        interrupted="interrupted; every file is either as it was or complete",
    )


def main() -> NoReturn:
    sys.exit(run(sys.argv[1:]))
