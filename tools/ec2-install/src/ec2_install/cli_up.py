"""`ec2-install up`: its options, then the hand-over to want.py (what the box must be),
up.py (making it) and install.py (the switch over SSH)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ec2_install.cli_options import DEFAULT_NAME, Debug, Json, Name, Region, _clients, app
from odbox_common import console
from odbox_common.errors import UsageError

if TYPE_CHECKING:
    from ec2_install.up import UpResult


@app.command()
def up(
    ctx: typer.Context,
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
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Make the box (or what is missing of it), install it over SSH, wait until it answers."""
    from ec2_install import spec

    ctx.with_resource(console.json_output(json))  # progress on stderr, the document on stdout

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
        if json:
            console.print_json(up_document(name, region_name, steps, None, [], None))
            return
        console.say(f"plan for box {name} in {region_name}; nothing was changed:")
        for i, step in enumerate(steps, 1):
            progress.write(f"  {i}. {step}\n")
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

    steps_after = next_steps(name, region_name, result.public_ip, installed=not no_install)
    for line in steps_after:
        progress.write(f"  {line}\n")
    if result.offsite_url is not None:
        progress.write(
            f"  offsite backups: {result.offsite_url}, through the instance's role; to turn "
            "the copies on, add to the node's configuration in the checkout (and see "
            'ec2-install\'s README, "Offsite backups"):\n'
        )
        for line in offsite.nix_lines(result.offsite_url, region_name):
            progress.write(f"    {line}\n")
    if json:
        console.print_json(
            up_document(name, region_name, None, result, steps_after, not no_install)
        )


def up_document(
    name: str,
    region: str,
    plan: list[str] | None,
    result: UpResult | None,
    next_steps: list[str],
    installed: bool | None,
) -> dict[str, Any]:
    """`up --json`: the plan (`--dry-run`) or what was made; every key always there (schema
    1: a key added keeps it, one renamed or removed makes it 2). `box` and `region` as in
    `status --json`."""
    return {
        "schema": 1,
        "box": name,
        "region": region,
        "dry_run": result is None,
        "changes": plan,
        "created": result.created if result else None,
        "instance": None if result is None else {
            "id": result.instance_id,
            "type": result.instance_type,
            "architecture": result.architecture,
            "image": result.image_id,
            "public_ip": result.public_ip,
        },
        "installed": installed,
        "offsite": result.offsite_url if result else None,
        "notes": result.notes if result else [],
        "next_steps": next_steps,
    }  # fmt: skip


def _identity(ssh_key: Path | None) -> Path | None:
    """The private half of --ssh-key PUB when it lies next to it (else ssh's defaults)."""
    if ssh_key is None or ssh_key.suffix != ".pub":
        return None
    private = ssh_key.with_suffix("")
    return private if private.is_file() else None
