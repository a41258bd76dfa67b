"""`up`: make what is missing of the box, in order, each step in the undo log; on any
failure (or Ctrl-C) undo what this run made, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ec2_install import aws, offsite
from ec2_install.box import Found, Rule, describe_rule, find, group_rules, is_managed, permission_of
from ec2_install.down import delete_group
from ec2_install.launch import (
    attach_backup,
    launch,
    tag_volume_roles,
    wait_running,
    wait_status_ok,
)
from ec2_install.progress import Phases
from ec2_install.spec import (
    AGE_KEY_PATH,
    BACKUP_DEVICE,
    TAG_KEY,
    TAG_ROLE,
)
from ec2_install.undo import UndoLog, say_quietly
from ec2_install.want import Want
from odbox_common.errors import ToolError, UsageError
from odbox_common.signals import interrupts_as_exceptions


@dataclass(frozen=True)
class UpResult:
    created: bool
    instance_id: str
    instance_type: str
    architecture: str
    image_id: str
    public_ip: str
    notes: list[str]
    offsite_url: str | None = None


def up_plan(ec2: Any, want: Want, found: Found, iam: Any = None, s3: Any = None) -> list[str]:
    """The steps `up` would take, in order, for --dry-run (reads only)."""
    steps: list[str] = []
    if found.instance is not None:
        i = found.instance
        steps.append(
            f"box {want.name} exists: {i['InstanceId']} ({i['InstanceType']}, "
            f"{i['State']['Name']}); no new instance"
        )
    if want.ssh_key is None and found.instance is None:
        _existing_key_pair(ec2, want)
    if want.ssh_key is not None and found.key_pair is None:
        steps.append(
            f"import key pair {want.key_name} ({want.ssh_key.kind} {want.ssh_key.fingerprint})"
        )
    elif found.instance is None:
        steps.append(f"use key pair {want.key_name}")
    if found.group is None:
        steps.append(f"create security group {want.group_name} in {want.vpc_id}")
    current = group_rules(found.group) if found.group else set()
    for rule in sorted(want.ingress() - current):
        steps.append(f"allow {describe_rule(rule)}")
    for rule in sorted(current - want.ingress()):
        verb = "revoke" if is_managed(rule) else "leave (not 22/80/443)"
        steps.append(f"{verb} {describe_rule(rule)}")
    if want.offsite is not None:
        steps += offsite.plan(s3, iam, want.offsite, want.name, found.iam)
    if found.instance is None:
        profile = f" with instance profile {want.offsite.role}" if want.offsite else ""
        steps += [
            f"launch {want.instance_type} ({want.architecture}) "
            f"from {want.ami.id} ({want.ami.name}){profile}, "
            f"IMDSv2 required, {want.root_gb} GB gp3 encrypted root, {want.backup_gb} GB gp3 "
            f"encrypted backup volume kept at termination, user data {len(want.user_data)} bytes "
            "preparing the backup disk",
            "wait until it runs, then until both status checks pass",
        ]
    if want.backup_volume_id is not None:
        steps.append(f"attach the kept volume {want.backup_volume_id} at {BACKUP_DEVICE}")
    if not found.addresses:
        steps.append("allocate an Elastic IP and associate it")
    elif not found.addresses[0].get("InstanceId"):
        steps.append(f"associate the Elastic IP {found.addresses[0]['PublicIp']}")
    if want.install:
        steps += [
            "pin the SSH host key to the fingerprints on the instance's console",
            f"copy the age identity to {AGE_KEY_PATH} (0400 root) over that connection",
            f"nixos-rebuild switch --flake {want.flake}#{want.node} --target-host root@IP",
            "wait until /odbox/health answers through Nginx",
        ]
    if found.empty:
        tags = ", ".join(f"{t['Key']}={t['Value']}" for t in aws.tags(want.name, want.name))
        steps.append(f"tag everything at creation: {tags}")
    return steps


def make_box(ec2: Any, want: Want, phases: Phases, iam: Any = None, s3: Any = None) -> UpResult:
    """Make what is missing of the box; on any failure (or Ctrl-C) undo what this run made.
    `iam` and `s3` make its offsite bucket and role, when `want.offsite` asks for them."""
    found = find(ec2, want.name, iam, want.region)
    notes: list[str] = []
    for v in found.detached_volumes():
        notes.append(
            f"the {aws.tag_dict(v).get(TAG_ROLE) or 'untagged'} volume {v['VolumeId']} "
            f"of an earlier {want.name} is kept "
            f"({v['Size']} GB, {v['AvailabilityZone']}); the new box gets its own"
        )
    instance = found.instance
    if instance is not None and instance["State"]["Name"] in ("stopping", "stopped"):
        raise ToolError(
            f"box {want.name} ({instance['InstanceId']}) is {instance['State']['Name']}: start it "
            f"(aws ec2 start-instances --region {want.region} --instance-ids "
            f"{instance['InstanceId']}) and run up again"
        )
    undo_log = UndoLog()
    step = "checking the key pair"
    try:
        with interrupts_as_exceptions():
            key_name = _ensure_key_pair(ec2, want, found, undo_log)
            step = "setting up the security group"
            group_id = _ensure_group(ec2, want, found, undo_log, phases)
            profile = None
            if want.offsite is not None:
                step = "setting up the offsite bucket and role"
                profile = offsite.ensure(
                    s3, iam, want.offsite, want.name, want.region, found.iam, undo_log.made
                )
            created = instance is None
            if instance is None:
                step = "launch"
                with phases.phase("launch", f"{want.instance_type} from {want.ami.name}"):
                    instance = launch(ec2, want, key_name, group_id, profile, undo_log)
            else:
                phases.say(
                    f"box {want.name} exists: {instance['InstanceId']} "
                    f"({instance['InstanceType']}, {instance['State']['Name']}); nothing launched"
                )
                has_profile = (instance.get("IamInstanceProfile") or {}).get("Arn", "")
                for label, asked, has in (
                    ("instance type", want.instance_type, instance["InstanceType"]),
                    ("key pair", key_name, instance.get("KeyName")),
                    ("instance profile", profile, has_profile.rpartition("/")[2] or "none"),
                ):
                    if asked not in (has, None):
                        notes.append(
                            f"the box runs with {label} {has}, not {asked}: "
                            "ec2-install does not change a running box"
                        )
            if instance["State"]["Name"] != "running":
                step = "running"
                with phases.phase("running", f"waiting for {instance['InstanceId']} to run"):
                    instance = wait_running(ec2, instance["InstanceId"])
            if want.backup_volume_id is not None:
                step = "attaching the backup volume"
                instance = attach_backup(ec2, want, instance)
            step = "tagging the volumes"
            tag_volume_roles(ec2, instance, want.ami.root_device, found.volumes)
            # The address comes before the status checks: `up` then reaches the box there,
            # and its public address must not change under it.
            step = "address"
            public_ip = _ensure_address(ec2, want, found, instance["InstanceId"], undo_log, phases)
            if created:
                step = "status checks"
                with phases.phase("status checks", "waiting for the system and instance checks"):
                    wait_status_ok(ec2, instance["InstanceId"], want.region)
    except BaseException as e:
        if not undo_log.items:
            raise
        reason = _reason(e)
        removed, left = undo_log.rollback(phases.say)
        summary = f"removed what this run made ({', '.join(removed) or 'nothing'})"
        if left:
            summary += f"; could NOT remove {', '.join(left)}: `ec2-install down` retries"
        if isinstance(e, KeyboardInterrupt):
            say_quietly(phases.say, f"interrupted during {step}; {summary}")
            raise
        raise ToolError(f"{step} failed: {reason}; {summary}") from e
    return UpResult(
        created, instance["InstanceId"], instance["InstanceType"],
        str(instance.get("Architecture") or want.architecture), instance["ImageId"], public_ip,
        notes, want.offsite.url(want.name) if want.offsite else None,
    )  # fmt: skip


def _reason(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if isinstance(e, aws.AwsError | ToolError):
        return str(e)
    if isinstance(e, aws.errors()):
        return aws.describe(e)
    return f"{type(e).__name__}: {e}"


def _existing_key_pair(ec2: Any, want: Want) -> list[dict[str, Any]]:
    """The key pair named want.key_name ([] if none); with --key-name it must exist."""
    from botocore.exceptions import ClientError

    try:
        pairs: list[dict[str, Any]] = ec2.describe_key_pairs(KeyNames=[want.key_name])["KeyPairs"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "InvalidKeyPair.NotFound":
            raise aws.AwsError(f"looking up key pair {want.key_name}: {aws.describe(e)}") from e
        pairs = []
    if want.ssh_key is None and not pairs:  # --key-name: the user's own key pair
        raise UsageError(f"--key-name {want.key_name}: no such key pair in {want.region}")
    return pairs


def _ensure_key_pair(ec2: Any, want: Want, found: Found, undo_log: UndoLog) -> str:
    pairs = _existing_key_pair(ec2, want)
    if want.ssh_key is None:  # --key-name: used as it is
        return want.key_name
    if pairs:
        tags = aws.tag_dict(pairs[0])
        if tags.get(TAG_KEY) != want.ssh_key.sha256:
            raise UsageError(
                f"a key pair named {want.key_name} exists with another key: give --key-name "
                f"{want.key_name} to use it, or delete it "
                f"(aws ec2 delete-key-pair --region {want.region} --key-name {want.key_name})"
            )
        return want.key_name
    aws.call(
        f"importing key pair {want.key_name}",
        ec2.import_key_pair,
        KeyName=want.key_name,
        PublicKeyMaterial=want.ssh_key.line.encode(),
        TagSpecifications=[
            aws.tag_spec("key-pair", want.name, want.key_name, {TAG_KEY: want.ssh_key.sha256})
        ],
    )
    undo_log.made(f"key pair {want.key_name}", lambda: ec2.delete_key_pair(KeyName=want.key_name))
    return want.key_name


def _ensure_group(ec2: Any, want: Want, found: Found, undo_log: UndoLog, phases: Phases) -> str:
    group = found.group
    if group is None:
        others = aws.call(
            "looking up security groups",
            ec2.describe_security_groups,
            Filters=[
                {"Name": "group-name", "Values": [want.group_name]},
                {"Name": "vpc-id", "Values": [want.vpc_id]},
            ],
        )["SecurityGroups"]
        if others:
            raise UsageError(
                f"a security group named {want.group_name} exists in {want.vpc_id} "
                f"({others[0]['GroupId']}) without ec2-install's tags: rename the box "
                "or delete that group"
            )
        group_id = aws.call(
            f"creating security group {want.group_name}",
            ec2.create_security_group,
            GroupName=want.group_name,
            VpcId=want.vpc_id,
            Description=f"Odoo Box {want.name}: SSH from one network, HTTP and HTTPS from anywhere",
            TagSpecifications=[aws.tag_spec("security-group", want.name, want.group_name)],
        )["GroupId"]
        undo_log.made(
            f"security group {group_id}", lambda: delete_group(ec2, group_id), needs_clean=True
        )
        current: set[Rule] = set()
    else:
        group_id = group["GroupId"]
        current = group_rules(group)
    missing, extra = want.ingress() - current, current - want.ingress()
    others = sorted(r for r in extra if not is_managed(r))
    extra = {r for r in extra if is_managed(r)}
    if others:
        phases.say(
            f"security group {group_id} also allows {', '.join(map(describe_rule, others))}; "
            "left as it is (ec2-install keeps only 22, 80 and 443 exact)"
        )
    if missing:
        aws.call(
            f"opening ports on {group_id}",
            ec2.authorize_security_group_ingress,
            GroupId=group_id,
            IpPermissions=[permission_of(r) for r in sorted(missing)],
        )
    if extra:
        aws.call(
            f"closing ports on {group_id}",
            ec2.revoke_security_group_ingress,
            GroupId=group_id,
            IpPermissions=[permission_of(r) for r in sorted(extra)],
        )
    if group is not None and (missing or extra):
        phases.say(
            f"security group {group_id}: now 22 only from {', '.join(want.ssh_cidrs)}, "
            "80 and 443 from anywhere"
        )
    return str(group_id)


def _ensure_address(
    ec2: Any, want: Want, found: Found, instance_id: str, undo_log: UndoLog, phases: Phases
) -> str:
    if found.addresses and found.addresses[0].get("InstanceId") == instance_id:
        return str(found.addresses[0]["PublicIp"])
    with phases.phase("address", "Elastic IP"):
        if found.addresses:
            address = found.addresses[0]
        else:
            address = aws.call(
                "allocating an Elastic IP",
                ec2.allocate_address,
                Domain="vpc",
                TagSpecifications=[aws.tag_spec("elastic-ip", want.name, want.name)],
            )
            allocation = address["AllocationId"]
            undo_log.made(
                f"Elastic IP {address['PublicIp']}",
                lambda: ec2.release_address(AllocationId=allocation),
            )
        association = aws.call(
            "associating the Elastic IP",
            ec2.associate_address,
            AllocationId=address["AllocationId"],
            InstanceId=instance_id,
            AllowReassociation=False,
        )["AssociationId"]
        undo_log.made(
            f"the association of {address['PublicIp']}",
            lambda: ec2.disassociate_address(AssociationId=association),
        )
    return str(address["PublicIp"])


def next_steps(name: str, region: str, ip: str, *, installed: bool) -> list[str]:
    box = f"--region {region} --name {name}"
    lines = [f"ssh root@{ip}"]
    if not installed:
        lines.append("install: run the same `ec2-install up` without --no-install")
    lines.append(f"status: ec2-install status {box}; remove: ec2-install down {box}")
    return lines
