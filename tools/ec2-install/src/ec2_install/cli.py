"""The `ec2-install` command line: parses arguments and prints; the work is in want.py
(what `up` asks for), box.py (what is there, `status`), up.py and down.py.

The commands: `up` in cli_up.py, `status` and `down` in cli_box.py, `amis` and `policy`
here, registered in that order (the order `--help` lists them); what they share is
cli_options.py's. Only typer and the standard library load at the top, so `--help` is
fast; boto3 loads in the commands that call AWS.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer

from ec2_install import __version__, cli_up  # isort: skip  (up first in --help)
from ec2_install import cli_box
from ec2_install.cli_options import Debug, Json, Region, _client, app
from odbox_common import console, runner
from odbox_common.errors import ExitCode, ToolError, UsageError

__all__ = ["app", "cli_box", "cli_up", "main", "run_cli"]


@app.callback()
def main_options(
    debug: Debug = False,
    version: Annotated[bool, runner.version_option("ec2-install", __version__)] = False,
) -> None:
    """Options for every command."""


@app.command("amis")
def list_amis(
    region: Region = None,
    arch: Annotated[
        str | None, typer.Option("--arch", metavar="ARCH", help="arm64 or x86_64 (default: both).")
    ] = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """List the official NixOS images of the region, newest release first."""
    from ec2_install import amis

    arch = {"aarch64": "arm64", "amd64": "x86_64"}.get(arch or "", arch)
    if arch is not None and arch not in ("arm64", "x86_64"):
        raise UsageError(f"bad --arch {arch!r}: arm64 (aarch64) or x86_64")
    ec2, region_name = _client(region)
    found = amis.nixos_amis(ec2, arch)
    if json:
        images = [a.as_json() for a in found]
        console.print_json({"schema": 1, "region": region_name, "images": images})
        return
    if not found:
        raise ToolError(f"no official NixOS images in {region_name}")
    console.table(
        f"NixOS images in {region_name} (owner 427812963091), newest first",
        ["release", "architecture", "image", "created", "name"],
        [[a.release, a.architecture, a.id, a.created[:10], a.name] for a in found],
    )


@app.command()
def policy(
    kms_key: Annotated[
        str | None,
        typer.Option(
            "--kms-key", metavar="ARN", help="Also let EC2 encrypt the volumes with this KMS key."
        ),
    ] = None,
    instance_type: Annotated[
        list[str] | None,
        typer.Option(
            "--instance-type", metavar="TYPE", help="Allow launching only these (repeat)."
        ),
    ] = None,
    ami_owner: Annotated[
        list[str] | None,
        typer.Option(
            "--ami-owner",
            metavar="ACCOUNT",
            help="Allow launching only images of these owners (repeat; 427812963091 is NixOS).",
        ),
    ] = None,
    debug: Debug = False,
) -> None:
    """Print the least-privilege IAM policy ec2-install needs (JSON)."""
    from ec2_install.policy import check_kms_key, document

    for owner in ami_owner or []:
        if not owner.isdigit() or len(owner) != 12:
            raise UsageError(f"--ami-owner {owner!r}: give a 12-digit AWS account ID")
    console.print_json(
        document(
            kms_key=check_kms_key(kms_key) if kms_key else None,
            instance_types=tuple(instance_type or ()),
            ami_owners=tuple(ami_owner or ()),
        )
    )


def run_cli(argv: list[str]) -> int:
    if not argv:
        runner.run(app, ["--help"], prog="ec2-install", debug_env="ODBOX_EC2_INSTALL_DEBUG")
        return int(ExitCode.USAGE)

    def known() -> tuple[type[BaseException], ...]:
        from ec2_install import aws

        return aws.errors()

    def describe(e: BaseException) -> str:
        from ec2_install import aws

        return aws.describe(e)

    return runner.run(
        app,
        argv,
        prog="ec2-install",
        debug_env="ODBOX_EC2_INSTALL_DEBUG",
        global_options=("--region",),
        interrupted="interrupted",
        known_errors=known,
        describe=describe,
    )


def main() -> NoReturn:
    sys.exit(run_cli(sys.argv[1:]))
