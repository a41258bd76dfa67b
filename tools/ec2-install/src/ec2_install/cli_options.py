"""What every `ec2-install` command shares: the app they are registered on, the option
types, and the AWS clients. Only typer and the standard library at the top, so `--help`
stays fast; boto3 loads in `_clients`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from odbox_common import runner

app = runner.typer_app(
    "ec2-install",
    (
        "One command from nothing to a NixOS Odoo box on EC2: the newest official NixOS "
        "image, encrypted root and backup volumes, a security group with only 22/80/443, "
        "IMDSv2, an Elastic IP, a first boot that formats the backup disk; then, from this "
        "laptop over SSH with the host key pinned from the console, the vault's age key and "
        "nixos-rebuild switch to the flake's machine, until /odbox/health answers. "
        "Everything is tagged with the box's name; re-running finds it and resumes, `down` "
        "removes it (keeping its volumes).\n\n"
        "AWS credentials and region come from the standard AWS environment (AWS_PROFILE, "
        "AWS_REGION, AWS_ENDPOINT_URL…).\n\n"
        "Exit codes: 0 ok, 1 failed, 2 usage."
    ),
)

Region = Annotated[
    str | None,
    typer.Option(
        "--region",
        metavar="REGION",
        help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's).",
    ),
]
Name = Annotated[
    str,
    typer.Option(
        "--name",
        envvar="ODBOX_BOX",
        metavar="NAME",
        help="The box's name: every resource is tagged with it.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
Debug = Annotated[
    bool,
    typer.Option("--debug", envvar="ODBOX_EC2_INSTALL_DEBUG", help="Show a traceback on errors."),
]
DEFAULT_NAME = "odoo-box"


def _client(region: str | None) -> tuple[Any, str]:
    from ec2_install import aws

    session = aws.session(region)
    return aws.client(session), str(session.region_name)


def _clients(region: str | None) -> tuple[Any, str, Any, Any, Any]:
    """EC2, the region's name, and the IAM, S3 and STS clients of the offsite backups."""
    from ec2_install import aws

    session = aws.session(region)
    ec2, iam, s3, sts = (aws.client(session, s) for s in ("ec2", "iam", "s3", "sts"))
    return ec2, str(session.region_name), iam, s3, sts
