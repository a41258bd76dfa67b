"""`ec2-install status` and `down`: what is there of the box (box.py), and removing it
(down.py)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from ec2_install.cli_options import DEFAULT_NAME, Debug, Json, Name, Region, _clients, app
from odbox_common import console
from odbox_common.errors import ToolError, UsageError


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
    ctx: typer.Context,
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
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Remove everything tagged for the box but its volumes (only those named go)."""
    ctx.with_resource(console.json_output(json))  # progress on stderr, the document on stdout
    if json and not (yes or dry_run):
        raise UsageError("--json asks no question: give --yes to remove the box (or --dry-run)")
    from ec2_install import box, offsite, progress, spec
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
        if json:
            console.print_json(down_document(name, region_name, dry_run, steps, []))
        return
    if dry_run and json:
        console.print_json(down_document(name, region_name, dry_run, steps, None))
        return
    if dry_run or not yes:
        console.say(f"{'plan' if dry_run else 'down'} for box {name} in {region_name}:")
        for i, step in enumerate(steps, 1):
            progress.write(f"  {i}. {step}\n")
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
    if json:
        console.print_json(down_document(name, region_name, dry_run, steps, removed))


def down_document(
    name: str, region: str, dry_run: bool, plan: list[str], removed: list[str] | None
) -> dict[str, Any]:
    """`down --json`: the plan, and what was removed (null under `--dry-run`); every key
    always there (schema 1, as `up --json`)."""
    return {"schema": 1, "box": name, "region": region, "dry_run": dry_run, "changes": plan,
            "removed": removed}  # fmt: skip
