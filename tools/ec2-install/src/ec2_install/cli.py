"""The `ec2-install` command line: parses arguments and prints; the work is in want.py
(what `up` asks for), box.py (what is there, `status`), up.py and down.py.

Longer than 450 lines because every command declares its options inline, as Typer
reads them; there is no work here to split off.

Only typer and the standard library load at the top, so `--help` is fast;
boto3 loads in the commands that call AWS.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from ec2_install import __version__
from odbox_common import console, runner
from odbox_common.errors import ExitCode, ToolError, UsageError

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


@app.callback()
def main_options(
    debug: Debug = False,
    version: Annotated[bool, runner.version_option("ec2-install", __version__)] = False,
) -> None:
    """Options for every command."""


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


@app.command()
def up(
    instance_type: Annotated[
        str,
        typer.Option(
            "--instance-type", metavar="TYPE", help="e.g. m6g.xlarge (Graviton) or t3.medium (x86)."
        ),
    ],
    ssh_cidr: Annotated[
        list[str],
        typer.Option(
            "--ssh-cidr",
            metavar="CIDR",
            help="Who may reach port 22, e.g. 203.0.113.7/32 (IPv4: the box has no IPv6 "
            "address); repeat for more networks.",
        ),
    ],
    region: Region = None,
    name: Name = DEFAULT_NAME,
    ssh_key: Annotated[
        Path | None,
        typer.Option(
            "--ssh-key", metavar="PUB", help="OpenSSH public key to import as key pair odbox-NAME."
        ),
    ] = None,
    key_name: Annotated[
        str | None,
        typer.Option("--key-name", metavar="NAME", help="Use this existing EC2 key pair instead."),
    ] = None,
    flake: Annotated[
        str | None,
        typer.Option(
            "--flake",
            envvar="ODBOX_FLAKE",
            metavar="URI",
            help="Flake this laptop builds the box from: a checkout (default: the one you are "
            "in, local commits included) or a URI such as github:acme/odoo-box.",
        ),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            metavar="NAME",
            help="The flake's machine (default: ec2-aarch64 or ec2-x86_64).",
        ),
    ] = None,
    age_key: Annotated[
        Path | None,
        typer.Option(
            "--age-key",
            metavar="FILE",
            help="The vault's age identity, copied to the box over the pinned SSH connection "
            "(default: vault/age.key of the checkout).",
        ),
    ] = None,
    ssh_config: Annotated[
        Path | None,
        typer.Option(
            "--ssh-config",
            envvar="EC2_INSTALL_SSH_CONFIG",
            metavar="FILE",
            help="An ssh_config for every connection to the box (a bastion's ProxyJump…).",
        ),
    ] = None,
    build_host: Annotated[
        bool,
        typer.Option("--build-host", help="Build the system on the box, not on this laptop."),
    ] = False,
    kms_key: Annotated[
        str | None,
        typer.Option(
            "--kms-key",
            metavar="ARN",
            help="Encrypt both volumes with this KMS key (`policy --kms-key` allows it).",
        ),
    ] = None,
    no_install: Annotated[
        bool,
        typer.Option(
            "--no-install", help="Stop once the instance runs: no SSH, no key, no switch."
        ),
    ] = False,
    ami: Annotated[
        str | None,
        typer.Option(
            "--ami", metavar="ID", help="Image to launch (default: the newest official NixOS one)."
        ),
    ] = None,
    root_gb: Annotated[int, typer.Option("--root-gb", min=1, help="Root volume size.")] = 200,
    backup_gb: Annotated[int, typer.Option("--backup-gb", min=1, help="Backup volume size.")] = 10,
    subnet_id: Annotated[
        str | None,
        typer.Option(
            "--subnet",
            "--subnet-id",
            metavar="ID",
            help="A public subnet (default: the default VPC's).",
        ),
    ] = None,
    vpc_id: Annotated[
        str | None,
        typer.Option(
            "--vpc", "--vpc-id", metavar="ID", help="The VPC (default: the region's default)."
        ),
    ] = None,
    backup_bucket: Annotated[
        str | None,
        typer.Option(
            "--backup-bucket",
            metavar="NAME",
            help="S3 bucket of this account for the offsite copies, under the box's name "
            "(default: odbox-backups-ACCOUNT-REGION, made if missing).",
        ),
    ] = None,
    no_offsite: Annotated[
        bool,
        typer.Option(
            "--no-offsite", help="No bucket, role or instance profile for offsite backups."
        ),
    ] = False,
    backup_volume_id: Annotated[
        str | None,
        typer.Option(
            "--backup-volume-id",
            metavar="ID",
            help="Attach this kept backup volume of the box (an earlier `down` kept it) instead "
            "of making one; the box runs in its availability zone.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; make no change (reads only).")
    ] = False,
    debug: Debug = False,
) -> None:
    """Make the box (or what is missing of it), install it over SSH, wait until it answers."""
    from ec2_install import spec

    spec.check_name(name)
    cidrs = spec.check_cidrs(ssh_cidr)
    spec.check_sizes(root_gb, backup_gb)
    if (ssh_key is None) == (key_name is None):
        raise UsageError("give one of --ssh-key PUB (imported as odbox-NAME) and --key-name NAME")
    key = spec.SshKey.read(ssh_key) if ssh_key is not None else None
    if flake is None and (flake := spec.checkout()) is None:
        raise UsageError("give --flake: this is not a git checkout of an Odoo Box flake")
    flake = spec.check_flake(flake)
    if age_key is None and not no_install:
        if not flake.startswith("/"):
            raise UsageError(f"give --age-key FILE: --flake {flake} is not a checkout here")
        age_key = Path(flake) / "vault" / "age.key"
    if age_key is not None and not no_install and not age_key.is_file():
        raise UsageError(
            f"no age identity at {age_key}: run `vaultgen generate` in the checkout, "
            "or give --age-key FILE"
        )
    if node is not None:
        spec.check_node(node)
    if no_offsite and backup_bucket is not None:
        raise UsageError("give --backup-bucket or --no-offsite, not both")
    if backup_bucket is not None:
        spec.check_bucket(backup_bucket)

    from ec2_install import amis, box, offsite, progress, userdata, want
    from ec2_install import policy as policy_module
    from ec2_install.progress import phases_for

    ec2, region_name, iam, s3, sts = _clients(region)
    arch = want.architecture_of(ec2, instance_type)
    image = (
        amis.explicit(ec2, ami, arch, instance_type) if ami else amis.newest(ec2, arch, region_name)
    )
    if image.owner != spec.NIXOS_OWNER:
        console.warn(
            f"--ami {image.id} ({image.name}) is not an official NixOS image "
            f"(owner {image.owner}, not {spec.NIXOS_OWNER}); going on as asked"
        )
    if not want.known_good(instance_type, arch):
        good = ", ".join(t for types in spec.KNOWN_GOOD.values() for t in types)
        console.warn(f"{instance_type} is not one Odoo Box is tested on ({good}); going on")
    kept = want.kept_volume(ec2, name, backup_volume_id) if backup_volume_id else None
    if kept is not None:
        backup_gb = int(kept["Size"])  # the first boot finds the disk by this size
        spec.check_sizes(root_gb, backup_gb)
    subnet, vpc = want.placement(
        ec2, region_name, subnet_id, vpc_id, kept["AvailabilityZone"] if kept else None
    )
    node_name = node or spec.NODES.get(arch)
    if node_name is None:
        raise UsageError(f"no Odoo Box machine for {arch}: give --node")
    wanted = want.Want(
        name=name,
        region=region_name,
        instance_type=instance_type,
        architecture=arch,
        ami=image,
        ssh_key=key,
        key_name=key_name or f"odbox-{name}",
        ssh_cidrs=cidrs,
        flake=flake,
        node=node_name,
        root_gb=root_gb,
        backup_gb=backup_gb,
        subnet_id=subnet,
        vpc_id=vpc,
        backup_volume_id=backup_volume_id,
        user_data=userdata.render(box=name, backup_gb=backup_gb, backup_device=spec.BACKUP_DEVICE),
        install=not no_install,
        kms_key=policy_module.check_kms_key(kms_key) if kms_key else None,
        offsite=None if no_offsite else offsite.want(sts, s3, name, region_name, backup_bucket),
    )
    # --no-offsite: not one IAM call (the credentials may have no IAM permission at all)
    offsite_iam = None if no_offsite else iam
    if dry_run:
        from ec2_install.up import up_plan

        steps = up_plan(ec2, wanted, box.find(ec2, name, offsite_iam, region_name), iam, s3)
        console.say(f"plan for box {name} in {region_name}; nothing was changed:")
        for i, step in enumerate(steps, 1):
            sys.stdout.write(f"  {i}. {step}\n")
        return
    with phases_for() as phases:
        from ec2_install.up import make_box

        result = make_box(ec2, wanted, phases, offsite_iam, s3)
    for note in result.notes:
        console.warn(note)
    state = "is up" if result.created else "was already there"
    progress.say(
        f"box {name} {state}: {result.instance_id} ({result.instance_type}, "
        f"{result.architecture}, {image.name if result.created else result.image_id}) "
        f"at {result.public_ip}"
    )
    node_name = node or spec.NODES.get(result.architecture, node_name)
    if not no_install:
        from ec2_install import install

        job = install.Install(
            name=name,
            region=region_name,
            instance_id=result.instance_id,
            ip=result.public_ip,
            flake=flake,
            node=node_name,
            age_key=age_key or Path("vault/age.key"),
            identity=_identity(ssh_key),
            ssh_config=ssh_config,
            build_host=build_host,
            state_dir=install.state_dir(region_name, name, result.instance_id),
        )
        with phases_for() as phases:
            install.run(ec2, job, phases)
        progress.say(f"box {name} answers: /odbox/health passes through Nginx on {job.ip}")
    from ec2_install.up import next_steps

    for line in next_steps(name, region_name, result.public_ip, installed=not no_install):
        progress.write(f"  {line}\n")
    if result.offsite_url is not None:
        progress.write(
            f"  offsite backups: {result.offsite_url}, through the instance's role; to turn "
            "the copies on, add to the node's configuration in the checkout (and see "
            'ec2-install\'s README, "Offsite backups"):\n'
        )
        for line in offsite.nix_lines(result.offsite_url, region_name):
            progress.write(f"    {line}\n")


def _identity(ssh_key: Path | None) -> Path | None:
    """The private half of --ssh-key PUB when it lies next to it (else ssh's defaults)."""
    if ssh_key is None or ssh_key.suffix != ".pub":
        return None
    private = ssh_key.with_suffix("")
    return private if private.is_file() else None


@app.command()
def status(
    region: Region = None,
    name: Name = DEFAULT_NAME,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Describe the box: instance, address, security group, key pair, volumes (reads only)."""
    from ec2_install import box, spec

    spec.check_name(name)
    ec2, region_name, iam, _, _ = _clients(region)
    doc = box.status_document(ec2, name, region_name, iam)
    if json:
        console.print_json(doc)
    else:
        _print_status(doc)
    if doc["state"] == "absent":
        raise ToolError(f"no box named {name} in {region_name} (`ec2-install up` makes one)")


def _print_status(doc: dict[str, Any]) -> None:
    console.say(f"box {doc['box']} in {doc['region']}: {doc['state']}")
    if i := doc.get("instance"):
        sys.stdout.write(
            f"  instance {i['id']}: {i['type']} {i['architecture']}, {i['state']}, "
            f"image {i['image']}, IMDSv2 {'required' if i['imdsv2_required'] else 'OPTIONAL'}\n"
        )
    if a := doc.get("address"):
        sys.stdout.write(
            f"  address {a['public_ip']} ({a['allocation_id']}), "
            f"{'on ' + a['instance'] if a['instance'] else 'not associated'}\n"
        )
    if g := doc.get("security_group"):
        from ec2_install.box import describe_rule

        rules = ", ".join(
            describe_rule((r["protocol"], r["from_port"], r["to_port"], r["cidr"]))
            for r in g["ingress"]
        )
        sys.stdout.write(f"  security group {g['id']}: {rules}\n")
    if k := doc.get("key_pair"):
        sys.stdout.write(f"  key pair {k['name']}\n")
    for v in doc["volumes"]:
        sys.stdout.write(
            f"  {v['role'] or 'untagged'} volume {v['id']}: {v['size_gb']} GB {v['type']}, "
            f"{'encrypted' if v['encrypted'] else 'NOT encrypted'}, {v['state']}\n"
        )
    if o := doc.get("offsite"):
        sys.stdout.write(
            f"  offsite backups {o['repo'] or '?'}: role {o['role'] or 'MISSING'}, "
            f"instance profile {o['instance_profile'] or 'MISSING'}\n"
        )
    if ssh := doc.get("ssh"):
        sys.stdout.write(f"  {ssh}\n")


@app.command()
def down(
    name: Annotated[
        str,
        typer.Option(
            "--name",
            envvar="ODBOX_BOX",
            metavar="NAME",
            help="The box to remove (no default here: say which).",
        ),
    ],
    region: Region = None,
    delete_backup_volume: Annotated[
        list[str] | None,
        typer.Option(
            "--delete-backup-volume",
            metavar="VOLUME-ID",
            help="Delete this kept volume of the box too (repeat for more); "
            "every other volume is kept.",
        ),
    ] = None,
    delete_backup_bucket: Annotated[
        str | None,
        typer.Option(
            "--delete-backup-bucket",
            metavar="NAME",
            help="Delete this offsite bucket too: only one ec2-install made, and only when "
            "empty (it is kept otherwise, and other boxes may use it).",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would go; remove nothing.")
    ] = False,
    debug: Debug = False,
) -> None:
    """Remove everything tagged for the box but its volumes (only those named go)."""
    from ec2_install import box, offsite, spec
    from ec2_install.down import check_bucket_to_delete, check_named_volumes, down_plan, remove_box
    from ec2_install.progress import phases_for

    spec.check_name(name)
    ec2, region_name, iam, s3, sts = _clients(region)
    found = box.find(ec2, name, iam, region_name)
    named = check_named_volumes(found, delete_backup_volume or [])
    bucket = None
    if delete_backup_bucket is not None:
        account = offsite.account_of(sts)
        check_bucket_to_delete(s3, delete_backup_bucket, account)
        bucket = (delete_backup_bucket, account)
    steps = down_plan(found, named, delete_backup_bucket)
    removing = [s for s in steps if not s.startswith("keep ")]
    if not removing:
        console.say(
            f"nothing to remove for box {name} in {region_name}"
            + (f" ({'; '.join(steps)})" if steps else "")
        )
        return
    if dry_run or not yes:
        console.say(f"{'plan' if dry_run else 'down'} for box {name} in {region_name}:")
        for i, step in enumerate(steps, 1):
            sys.stdout.write(f"  {i}. {step}\n")
    if dry_run:
        console.say("nothing was changed (--dry-run)")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("not on a terminal: give --yes to remove the box")
        answer = typer.prompt(
            f"type the box's name ({name}) to remove it", default="", show_default=False
        )
        if answer.strip() != name:
            raise ToolError("not confirmed; nothing was removed")
    with phases_for() as phases:
        removed = remove_box(ec2, found, named, phases, region_name, iam, s3, bucket)
    console.say(f"box {name} is down: removed {', '.join(removed)}")


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
        console.print_json([a.as_json() for a in found])
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
