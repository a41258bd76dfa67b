"""A box on EC2: what `up` asks for, what is there, and the calls that make or remove it.

Every resource is found by its two tags (TAG_BOX = the box's name, TAG_TOOL =
ec2-install), which it carries from the call that makes it. `up` makes only
what is missing and undoes what it made if any step fails; `down` removes what
the tags name, except the backup volume unless asked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ec2_install import aws, offsite
from ec2_install.amis import Ami
from ec2_install.progress import Phases, poll
from ec2_install.spec import (
    AGE_KEY_PATH,
    BACKUP_DEVICE,
    KNOWN_GOOD,
    TAG_BOX,
    TAG_KEY,
    TAG_ROLE,
    TAG_TOOL,
    TOOL,
    SshKey,
)
from odbox_common.errors import ToolError, UsageError
from odbox_common.signals import interrupts_as_exceptions, uninterrupted

LIVE_STATES = ["pending", "running", "stopping", "stopped"]
RUNNING_TIMEOUT = 600.0
STATUS_TIMEOUT = 1200.0
TERMINATE_TIMEOUT = 600.0
PROFILE_TIMEOUT = 120.0  # IAM's eventual consistency: usually about 10 s
ANYWHERE = ("0.0.0.0/0", "::/0")
MANAGED_PORTS = (22, 80, 443)
# An ingress rule: protocol ("tcp", or "-1" for all), first port, last port, CIDR.
Rule = tuple[str, int, int, str]


def architecture_of(ec2: Any, instance_type: str) -> str:
    """arm64 or x86_64, from describe_instance_types; an unknown type is a usage error."""
    from botocore.exceptions import ClientError

    try:
        types = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in (
            "InvalidInstanceType",
            "InvalidParameterValue",
        ):
            raise UsageError(f"unknown instance type {instance_type!r} in this region") from None
        raise aws.AwsError(f"looking up {instance_type}: {aws.describe(e)}") from e
    if not types:
        raise UsageError(f"unknown instance type {instance_type!r} in this region")
    supported = types[0]["ProcessorInfo"]["SupportedArchitectures"]
    for arch in ("arm64", "x86_64"):
        if arch in supported:
            return arch
    return str(supported[0])


def known_good(instance_type: str, architecture: str) -> bool:
    return instance_type in KNOWN_GOOD.get(architecture, ())


@dataclass(frozen=True)
class Want:
    """Everything `up` needs, resolved and checked before anything is made."""

    name: str
    region: str
    instance_type: str
    architecture: str
    ami: Ami
    ssh_key: SshKey | None  # imported as odbox-NAME; None with --key-name
    key_name: str
    ssh_cidrs: tuple[str, ...]
    flake: str
    node: str
    root_gb: int
    backup_gb: int
    subnet_id: str | None
    vpc_id: str
    backup_volume_id: str | None  # a kept volume to attach instead of a new one
    user_data: str
    install: bool = True
    kms_key: str | None = None  # a customer-managed key for both volumes (default: EBS's own)
    offsite: offsite.Offsite | None = None  # the bucket and role of its offsite backups

    @property
    def group_name(self) -> str:
        return f"odbox-{self.name}"

    def ingress(self) -> set[Rule]:
        ssh = {("tcp", 22, 22, cidr) for cidr in self.ssh_cidrs}
        return ssh | {("tcp", port, port, cidr) for port in (80, 443) for cidr in ANYWHERE}


def kept_volume(ec2: Any, name: str, volume_id: str) -> dict[str, Any]:
    """The volume --backup-volume-id names: a detached volume tagged for this box."""
    from botocore.exceptions import ClientError

    try:
        volumes = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in (
            "InvalidVolume.NotFound",
            "InvalidParameterValue",
        ):
            volumes = []
        else:
            raise aws.AwsError(f"looking up volume {volume_id}: {aws.describe(e)}") from e
    if not volumes:
        raise UsageError(f"--backup-volume-id {volume_id} does not exist in this region")
    volume: dict[str, Any] = volumes[0]
    tags = aws.tag_dict(volume)
    if tags.get(TAG_BOX) != name or tags.get(TAG_TOOL) != TOOL:
        raise UsageError(
            f"--backup-volume-id {volume_id} is not a kept volume of box {name} "
            f"(it is tagged for {tags.get(TAG_BOX) or 'no box'}): ec2-install attaches only "
            "the box's own volumes"
        )
    if volume["State"] == "available":
        return volume
    on = [a["InstanceId"] for a in volume.get("Attachments") or []]
    if volume["State"] == "in-use" and on:
        instance = _describe_instance(ec2, on[0])
        if instance is not None and aws.tag_dict(instance).get(TAG_BOX) == name:
            return volume  # already on this box's instance (a re-run)
    raise UsageError(f"--backup-volume-id {volume_id} is {volume['State']}, not free to attach")


def placement(
    ec2: Any,
    region: str,
    subnet_id: str | None,
    vpc_id: str | None,
    zone: str | None,
) -> tuple[str | None, str]:
    """The subnet (None: AWS's choice in the default VPC) and VPC of the box; `zone` is the
    availability zone a kept backup volume lives in, where the instance must run too."""
    if subnet_id:
        subnets = aws.call(
            f"looking up subnet {subnet_id}",
            ec2.describe_subnets,
            Filters=[{"Name": "subnet-id", "Values": [subnet_id]}],
        )["Subnets"]
        if not subnets:
            raise UsageError(f"--subnet {subnet_id} does not exist in {region}")
        subnet = subnets[0]
        if vpc_id and subnet["VpcId"] != vpc_id:
            raise UsageError(f"--subnet {subnet_id} is in {subnet['VpcId']}, not --vpc {vpc_id}")
        if zone and subnet["AvailabilityZone"] != zone:
            raise UsageError(
                f"--subnet {subnet_id} is in {subnet['AvailabilityZone']}, but the backup "
                f"volume is in {zone}: give a subnet of {zone}"
            )
        return subnet_id, str(subnet["VpcId"])
    if vpc_id is None:
        vpcs = aws.call(
            "looking up the default VPC",
            ec2.describe_vpcs,
            Filters=[{"Name": "isDefault", "Values": ["true"]}],
        )["Vpcs"]
        if not vpcs:
            raise UsageError(f"{region} has no default VPC: give --vpc or --subnet")
        default = str(vpcs[0]["VpcId"])
        if zone is None:
            return None, default
        vpc_id = default
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}]
    if zone:
        filters.append({"Name": "availability-zone", "Values": [zone]})
    subnets = aws.call("looking up subnets", ec2.describe_subnets, Filters=filters)["Subnets"]
    if not subnets:
        where = f" in {zone} (where the backup volume is)" if zone else ""
        raise UsageError(f"--vpc {vpc_id} has no subnet{where}: give --subnet")
    # the zone's default subnet first (public), then the rest by zone and ID
    subnets.sort(key=lambda n: (not n.get("DefaultForAz"), n["AvailabilityZone"], n["SubnetId"]))
    return str(subnets[0]["SubnetId"]), vpc_id


# ----------------------------------------------------------------------------- what is there


@dataclass
class Found:
    name: str
    instance: dict[str, Any] | None = None
    group: dict[str, Any] | None = None
    key_pair: dict[str, Any] | None = None
    addresses: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    iam: offsite.FoundIam = field(default_factory=offsite.FoundIam)

    @property
    def empty(self) -> bool:
        return not (
            self.instance or self.group or self.key_pair or self.addresses or self.volumes
            or self.iam.role or self.iam.profile
        )  # fmt: skip

    def detached_volumes(self) -> list[dict[str, Any]]:
        """Volumes of the box attached to nothing: an earlier box's kept backup, or more."""
        return [v for v in self.volumes if not v.get("Attachments")]


def find(ec2: Any, name: str, iam: Any = None, region: str = "") -> Found:
    """Everything tagged for box `name` in the client's region (read-only); with `iam`,
    the role and instance profile of its offsite backups too."""
    filters = aws.box_filters(name)
    found = Found(name)
    if iam is not None:
        found.iam = offsite.find_iam(iam, name, region)
    reservations = aws.call(
        "looking for the box's instance",
        ec2.describe_instances,
        Filters=[*filters, {"Name": "instance-state-name", "Values": LIVE_STATES}],
    )
    instances = [i for r in reservations["Reservations"] for i in r["Instances"]]
    if len(instances) > 1:
        ids = ", ".join(i["InstanceId"] for i in instances)
        raise ToolError(
            f"box {name} has {len(instances)} instances ({ids}): remove the extra by hand"
        )
    found.instance = instances[0] if instances else None
    groups = aws.call(
        "looking for the box's security group", ec2.describe_security_groups, Filters=filters
    )["SecurityGroups"]
    found.group = groups[0] if groups else None
    pairs = aws.call("looking for the box's key pair", ec2.describe_key_pairs, Filters=filters)[
        "KeyPairs"
    ]
    found.key_pair = pairs[0] if pairs else None
    found.addresses = aws.call(
        "looking for the box's address", ec2.describe_addresses, Filters=filters
    )["Addresses"]
    volumes = aws.call("looking for the box's volumes", ec2.describe_volumes, Filters=filters)
    found.volumes = [v for v in volumes["Volumes"] if v["State"] not in ("deleting", "deleted")]
    return found


def _group_rules(group: dict[str, Any]) -> set[Rule]:
    rules: set[Rule] = set()
    for p in group.get("IpPermissions", []):
        ports = (p.get("FromPort", -1), p.get("ToPort", -1))
        for r in p.get("IpRanges", []):
            rules.add((p["IpProtocol"], *ports, r["CidrIp"]))
        for r in p.get("Ipv6Ranges", []):
            rules.add((p["IpProtocol"], *ports, r["CidrIpv6"]))
    return rules


def _managed(rule: Rule) -> bool:
    """A rule that opens 22, 80 or 443 (alone, in a range, or as "all"): ours to keep exact."""
    protocol, first, last, _ = rule
    if protocol in ("-1", "all"):
        return True
    return protocol in ("tcp", "6") and any(first <= p <= last for p in MANAGED_PORTS)


def describe_rule(rule: Rule) -> str:
    protocol, first, last, cidr = rule
    if protocol in ("-1", "all"):
        return f"all traffic from {cidr}"
    ports = str(first) if first == last else f"{first}-{last}"
    return f"{protocol} {ports} from {cidr}"


def _permission(rule: Rule) -> dict[str, Any]:
    protocol, first, last, cidr = rule
    ranges = (
        {"Ipv6Ranges": [{"CidrIpv6": cidr}]} if ":" in cidr else {"IpRanges": [{"CidrIp": cidr}]}
    )
    ports = {} if protocol == "-1" else {"FromPort": first, "ToPort": last}
    return {"IpProtocol": protocol, **ports, **ranges}


def status(ec2: Any, name: str, region: str, iam: Any = None) -> dict[str, Any]:
    """The box as one JSON-ready document (state "absent" when nothing is tagged for it)."""
    found = find(ec2, name, iam, region)
    doc: dict[str, Any] = {"box": name, "region": region}
    instance = found.instance
    if instance is not None:
        doc["state"] = instance["State"]["Name"]
    elif found.empty:
        doc["state"] = "absent"
    elif (
        found.group is None
        and found.key_pair is None
        and not found.addresses
        and found.iam.role is None
        and found.iam.profile is None
        and all(v in found.detached_volumes() for v in found.volumes)
    ):
        doc["state"] = "down"  # only kept backup volumes are left
    else:
        doc["state"] = "partial"  # leftovers of a run whose rollback failed: `down` removes them
    if instance is not None:
        doc["instance"] = {
            "id": instance["InstanceId"],
            "type": instance["InstanceType"],
            "architecture": instance.get("Architecture"),
            "image": instance["ImageId"],
            "state": instance["State"]["Name"],
            "launched": str(instance.get("LaunchTime")),
            "availability_zone": instance.get("Placement", {}).get("AvailabilityZone"),
            "imdsv2_required": instance.get("MetadataOptions", {}).get("HttpTokens") == "required",
            "public_ip": instance.get("PublicIpAddress"),
            "key_name": instance.get("KeyName"),
            "instance_profile": (instance.get("IamInstanceProfile") or {}).get("Arn"),
        }
    if found.addresses:
        a = found.addresses[0]
        doc["address"] = {
            "allocation_id": a["AllocationId"],
            "public_ip": a["PublicIp"],
            "instance": a.get("InstanceId") or None,
        }
    if found.group is not None:
        doc["security_group"] = {
            "id": found.group["GroupId"],
            "name": found.group["GroupName"],
            "ingress": [
                {"protocol": p, "from_port": first, "to_port": last, "cidr": c}
                for p, first, last, c in sorted(_group_rules(found.group))
            ],
        }
    if found.key_pair is not None:
        doc["key_pair"] = {"name": found.key_pair["KeyName"], "made_by_ec2_install": True}
    elif instance is not None and instance.get("KeyName"):
        doc["key_pair"] = {"name": instance["KeyName"], "made_by_ec2_install": False}
    doc["volumes"] = [_volume_doc(v, instance) for v in found.volumes]
    bucket = found.iam.bucket
    doc["offsite"] = None
    if found.iam.role is not None or found.iam.profile is not None:
        doc["offsite"] = {
            "repo": offsite.repo_url(bucket, name) if bucket else None,
            "bucket": bucket,
            "role": (found.iam.role or {}).get("RoleName"),
            "instance_profile": (found.iam.profile or {}).get("InstanceProfileName"),
        }
    ip = doc.get("address", {}).get("public_ip") or (instance or {}).get("PublicIpAddress")
    if instance is not None and ip:
        doc["ssh"] = f"ssh root@{ip}"
    return doc


def _volume_doc(v: dict[str, Any], instance: dict[str, Any] | None) -> dict[str, Any]:
    delete_on_termination = None
    for m in (instance or {}).get("BlockDeviceMappings", []):
        if m.get("Ebs", {}).get("VolumeId") == v["VolumeId"]:
            delete_on_termination = m["Ebs"].get("DeleteOnTermination")
    attachments = v.get("Attachments") or []
    return {
        "id": v["VolumeId"],
        "role": aws.tag_dict(v).get(TAG_ROLE),
        "size_gb": v["Size"],
        "type": v["VolumeType"],
        "encrypted": v["Encrypted"],
        "state": v["State"],
        "attached_to": attachments[0]["InstanceId"] if attachments else None,
        "device": attachments[0]["Device"] if attachments else None,
        "delete_on_termination": delete_on_termination,
    }


# ----------------------------------------------------------------------------- up


class Ledger:
    """What this run made, each with the call that removes it, undone newest first."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None], bool]] = []

    def made(self, what: str, undo: Callable[[], None], *, needs_clean: bool = False) -> None:
        """`needs_clean`: undo only if every newer undo worked (a group in use cannot go)."""
        self._undo.append((what, undo, needs_clean))

    @property
    def items(self) -> list[str]:
        return [what for what, _, _ in self._undo]

    def rollback(self, say: Callable[[str], None]) -> tuple[list[str], list[str]]:
        """Undo newest first; every item gets its try. Signals are ignored meanwhile."""
        removed: list[str] = []
        left: list[str] = []
        with uninterrupted():
            for what, undo, needs_clean in reversed(self._undo):
                if needs_clean and left:
                    left.append(f"{what} (kept: what uses it is still there)")
                    continue
                try:
                    undo()
                    removed.append(what)
                    _quietly(say, f"rollback: removed {what}")
                except Exception as e:
                    reason = aws.describe(e) if isinstance(e, aws.errors()) else str(e)
                    left.append(f"{what} ({reason})")
                    _quietly(say, f"rollback: could not remove {what}: {reason}")
            self._undo.clear()
        return removed, left


def _quietly(say: Callable[[str], None], line: str) -> None:
    """A progress line that cannot stop a rollback (stdout may be a closed pipe)."""
    with contextlib.suppress(OSError, ValueError):
        say(line)


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


def plan(ec2: Any, want: Want, found: Found, iam: Any = None, s3: Any = None) -> list[str]:
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
    current = _group_rules(found.group) if found.group else set()
    for rule in sorted(want.ingress() - current):
        steps.append(f"allow {describe_rule(rule)}")
    for rule in sorted(current - want.ingress()):
        verb = "revoke" if _managed(rule) else "leave (not 22/80/443)"
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


def up(ec2: Any, want: Want, phases: Phases, iam: Any = None, s3: Any = None) -> UpResult:
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
    ledger = Ledger()
    step = "checking the key pair"
    try:
        with interrupts_as_exceptions():
            key_name = _ensure_key_pair(ec2, want, found, ledger)
            step = "setting up the security group"
            group_id = _ensure_group(ec2, want, found, ledger, phases)
            profile = None
            if want.offsite is not None:
                step = "setting up the offsite bucket and role"
                profile = offsite.ensure(
                    s3, iam, want.offsite, want.name, want.region, found.iam, ledger.made
                )
            created = instance is None
            if instance is None:
                step = "launch"
                with phases.phase("launch", f"{want.instance_type} from {want.ami.name}"):
                    instance = _launch(ec2, want, key_name, group_id, profile, ledger)
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
                    instance = _wait_running(ec2, instance["InstanceId"])
            if want.backup_volume_id is not None:
                step = "attaching the backup volume"
                instance = _attach_backup(ec2, want, instance)
            step = "tagging the volumes"
            _tag_volume_roles(ec2, instance, want.ami.root_device, found.volumes)
            # The address comes before the status checks: `up` then reaches the box there,
            # and its public address must not change under it.
            step = "address"
            public_ip = _ensure_address(ec2, want, found, instance["InstanceId"], ledger, phases)
            if created:
                step = "status checks"
                with phases.phase("status checks", "waiting for the system and instance checks"):
                    _wait_status_ok(ec2, instance["InstanceId"], want.region)
    except BaseException as e:
        if not ledger.items:
            raise
        reason = _reason(e)
        removed, left = ledger.rollback(phases.say)
        summary = f"removed what this run made ({', '.join(removed) or 'nothing'})"
        if left:
            summary += f"; could NOT remove {', '.join(left)}: `ec2-install down` retries"
        if isinstance(e, KeyboardInterrupt):
            _quietly(phases.say, f"interrupted during {step}; {summary}")
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


def _ensure_key_pair(ec2: Any, want: Want, found: Found, ledger: Ledger) -> str:
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
    ledger.made(f"key pair {want.key_name}", lambda: ec2.delete_key_pair(KeyName=want.key_name))
    return want.key_name


def _ensure_group(ec2: Any, want: Want, found: Found, ledger: Ledger, phases: Phases) -> str:
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
        ledger.made(
            f"security group {group_id}", lambda: _delete_group(ec2, group_id), needs_clean=True
        )
        current: set[Rule] = set()
    else:
        group_id = group["GroupId"]
        current = _group_rules(group)
    missing, extra = want.ingress() - current, current - want.ingress()
    others = sorted(r for r in extra if not _managed(r))
    extra = {r for r in extra if _managed(r)}
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
            IpPermissions=[_permission(r) for r in sorted(missing)],
        )
    if extra:
        aws.call(
            f"closing ports on {group_id}",
            ec2.revoke_security_group_ingress,
            GroupId=group_id,
            IpPermissions=[_permission(r) for r in sorted(extra)],
        )
    if group is not None and (missing or extra):
        phases.say(
            f"security group {group_id}: now 22 only from {', '.join(want.ssh_cidrs)}, "
            "80 and 443 from anywhere"
        )
    return str(group_id)


def _launch(
    ec2: Any, want: Want, key_name: str, group_id: str, profile: str | None, ledger: Ledger
) -> dict[str, Any]:
    kms = {"KmsKeyId": want.kms_key} if want.kms_key else {}
    volumes = [
        {
            "DeviceName": want.ami.root_device,
            "Ebs": {
                "VolumeSize": want.root_gb,
                "VolumeType": "gp3",
                "Encrypted": True,
                "DeleteOnTermination": True,
                **kms,
            },
        },
    ]
    if want.backup_volume_id is None:
        volumes.append({
            "DeviceName": BACKUP_DEVICE,
            "Ebs": {
                "VolumeSize": want.backup_gb,
                "VolumeType": "gp3",
                "Encrypted": True,
                "DeleteOnTermination": False,
                **kms,
            },
        })  # fmt: skip
    extra: dict[str, Any] = {"SubnetId": want.subnet_id} if want.subnet_id else {}
    if profile is not None:
        extra["IamInstanceProfile"] = {"Name": profile}
    params: dict[str, Any] = dict(
        ImageId=want.ami.id,
        InstanceType=want.instance_type,
        MinCount=1,
        MaxCount=1,
        KeyName=key_name,
        SecurityGroupIds=[group_id],
        BlockDeviceMappings=volumes,
        MetadataOptions={
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 1,
        },
        UserData=want.user_data,
        ClientToken=client_token(want.name, group_id),
        TagSpecifications=[
            aws.tag_spec("instance", want.name, want.name),
            aws.tag_spec("volume", want.name, want.name),
        ],
        **extra,
    )
    try:
        response = _run_instances(ec2, params)
    except aws.errors() as e:
        from botocore.exceptions import ClientError

        if not isinstance(e, ClientError):  # no answer: it may have launched
            ledger.made("the instance of this launch", lambda: _undo_launch(ec2, want, params))
        raise aws.AwsError(f"launching the instance: {aws.describe(e)}") from e
    except BaseException:  # Ctrl-C or SIGTERM while the request was on the wire
        ledger.made("the instance of this launch", lambda: _undo_launch(ec2, want, params))
        raise
    instance: dict[str, Any] = response["Instances"][0]
    instance_id = instance["InstanceId"]

    def undo() -> None:  # the kept volume attached to it is never this run's to delete
        _terminate(ec2, instance_id, delete_kept_volumes=True, spare=want.backup_volume_id)

    ledger.made(f"instance {instance_id} and its volumes", undo)
    return instance


def _run_instances(ec2: Any, params: dict[str, Any]) -> dict[str, Any]:
    """RunInstances, waiting out a new instance profile: IAM takes seconds to show it to
    EC2, which until then calls it invalid."""
    from botocore.exceptions import ClientError

    answer: list[dict[str, Any]] = []

    def launched() -> bool:
        try:
            answer.append(ec2.run_instances(**params))
        except ClientError as e:
            error = e.response.get("Error", {})
            if "IamInstanceProfile" in params and "iamInstanceProfile" in error.get("Message", ""):
                return False
            raise
        return True

    poll("the new instance profile to reach EC2", PROFILE_TIMEOUT, launched)
    return answer[0]


def client_token(name: str, group_id: str) -> str:
    """RunInstances' idempotency token: the same for every run of one box (its group lives
    as long as the box does, and a new box gets a new group), so a run killed after sending
    the launch and the run after it get the same instance from AWS, never a second one."""
    import hashlib

    return f"odbox-{hashlib.sha256(f'{name}/{group_id}'.encode()).hexdigest()[:40]}"


def _undo_launch(ec2: Any, want: Want, params: dict[str, Any]) -> None:
    """Remove the instance of a launch whose answer never came (interrupted, connection lost).

    AWS answers a RunInstances with the same ClientToken and parameters with the instance
    the first one made (or makes it now); every live instance of the box carrying that
    token goes too (a server that ignores the token, such as moto, launches another)."""
    token = params["ClientToken"]
    ids = {i["InstanceId"] for i in ec2.run_instances(**params)["Instances"]}
    reservations = ec2.describe_instances(
        Filters=[
            *aws.box_filters(want.name),
            {"Name": "instance-state-name", "Values": LIVE_STATES},
        ]
    )["Reservations"]
    ids |= {
        i["InstanceId"]
        for r in reservations
        for i in r["Instances"]
        if i.get("ClientToken") == token
    }
    for instance_id in sorted(ids):
        _terminate(ec2, instance_id, delete_kept_volumes=True, spare=want.backup_volume_id)


def _describe_instance(ec2: Any, instance_id: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as e:  # a new instance can be unknown for a moment (eventual consistency)
        if e.response.get("Error", {}).get("Code") == "InvalidInstanceID.NotFound":
            return None
        raise
    return reservations[0]["Instances"][0] if reservations else None


def _wait_running(ec2: Any, instance_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        instance = _describe_instance(ec2, instance_id)
        if instance is None:
            return None
        state = instance["State"]["Name"]
        if state in ("shutting-down", "terminated", "stopping", "stopped"):
            reason = instance.get("StateReason", {}).get("Message") or state
            raise ToolError(f"instance {instance_id} is {state}: {reason}")
        return instance if state == "running" else None

    result: dict[str, Any] = poll(f"{instance_id} to run", RUNNING_TIMEOUT, check)
    return result


def _wait_status_ok(ec2: Any, instance_id: str, region: str) -> None:
    """Both checks ok. "impaired" counts as not yet: the first boot's switch can trip them."""
    last = ["not reported yet"]

    def check() -> bool:
        statuses = ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"]
        if not statuses:
            return False
        system = statuses[0]["SystemStatus"]["Status"]
        inst = statuses[0]["InstanceStatus"]["Status"]
        last[0] = f"system {system}, instance {inst}"
        return bool(system == "ok" and inst == "ok")

    try:
        poll(f"the status checks of {instance_id}", STATUS_TIMEOUT, check)
    except ToolError as e:
        raise ToolError(
            f"{e} (last: {last[0]}); see its console output (aws ec2 get-console-output "
            f"--region {region} --instance-id {instance_id})"
        ) from None


def _attach_backup(ec2: Any, want: Want, instance: dict[str, Any]) -> dict[str, Any]:
    """The kept volume at the backup device, once (a re-run finds it there)."""
    at = {
        m["DeviceName"]: m.get("Ebs", {}).get("VolumeId")
        for m in instance.get("BlockDeviceMappings", [])
    }
    if at.get(BACKUP_DEVICE) == want.backup_volume_id:
        return instance
    if at.get(BACKUP_DEVICE):
        raise ToolError(
            f"{instance['InstanceId']} already has {at[BACKUP_DEVICE]} at {BACKUP_DEVICE}, not "
            f"--backup-volume-id {want.backup_volume_id}: ec2-install does not swap a box's disks"
        )
    aws.call(
        f"attaching {want.backup_volume_id}",
        ec2.attach_volume,
        VolumeId=want.backup_volume_id,
        InstanceId=instance["InstanceId"],
        Device=BACKUP_DEVICE,
    )

    def attached() -> dict[str, Any] | None:
        i = _describe_instance(ec2, instance["InstanceId"])
        maps = {m["DeviceName"]: m.get("Ebs", {}) for m in (i or {}).get("BlockDeviceMappings", [])}
        return i if maps.get(BACKUP_DEVICE, {}).get("VolumeId") == want.backup_volume_id else None

    result: dict[str, Any] = poll(f"{want.backup_volume_id} to attach", RUNNING_TIMEOUT, attached)
    return result


def _tag_volume_roles(
    ec2: Any, instance: dict[str, Any], root_device: str, volumes: list[dict[str, Any]]
) -> None:
    """Each volume's role tag, on every run: a first run killed before it leaves them untagged."""
    tagged = {v["VolumeId"]: aws.tag_dict(v).get(TAG_ROLE) for v in volumes}
    for mapping in instance.get("BlockDeviceMappings", []):
        role = {root_device: "root", BACKUP_DEVICE: "backup"}.get(mapping["DeviceName"])
        if role and "Ebs" in mapping:
            volume_id = mapping["Ebs"]["VolumeId"]
            if tagged.get(volume_id) == role:
                continue
            aws.call(
                f"tagging volume {volume_id}",
                ec2.create_tags,
                Resources=[volume_id],
                Tags=[{"Key": TAG_ROLE, "Value": role}],
            )


def _ensure_address(
    ec2: Any, want: Want, found: Found, instance_id: str, ledger: Ledger, phases: Phases
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
            ledger.made(
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
        ledger.made(
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


# ----------------------------------------------------------------------------- down


def _terminate(
    ec2: Any, instance_id: str, *, delete_kept_volumes: bool, spare: str | None = None
) -> None:
    """Terminate, wait until gone; then delete its kept (backup) volumes if asked, but
    never `spare` (a kept volume of an earlier box that this run attached)."""
    instance = _describe_instance(ec2, instance_id)
    kept = [
        m["Ebs"]["VolumeId"]
        for m in (instance or {}).get("BlockDeviceMappings", [])
        if "Ebs" in m
        and not m["Ebs"].get("DeleteOnTermination", True)
        and m["Ebs"]["VolumeId"] != spare
    ]
    ec2.terminate_instances(InstanceIds=[instance_id])

    def gone() -> bool:
        i = _describe_instance(ec2, instance_id)
        return i is None or i["State"]["Name"] == "terminated"

    poll(f"{instance_id} to terminate", TERMINATE_TIMEOUT, gone)
    if delete_kept_volumes:
        for volume_id in kept:
            _delete_volume(ec2, volume_id)


def _delete_when_free(what: str, delete: Callable[[], Any], gone: str, busy: str) -> None:
    """Call `delete` until AWS stops answering `busy`; `gone` (already deleted) is success."""
    from botocore.exceptions import ClientError

    def done() -> bool:
        try:
            delete()
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code == busy:
                return False
            if code != gone:
                raise
        return True

    poll(f"{what} to be free", TERMINATE_TIMEOUT, done)


def _delete_volume(ec2: Any, volume_id: str) -> None:
    # VolumeInUse: still detaching from the terminated instance
    _delete_when_free(f"volume {volume_id}", lambda: ec2.delete_volume(VolumeId=volume_id),
                      "InvalidVolume.NotFound", "VolumeInUse")  # fmt: skip


def _delete_group(ec2: Any, group_id: str) -> None:
    # DependencyViolation: the instance's network interface is still going
    _delete_when_free(f"security group {group_id}",
                      lambda: ec2.delete_security_group(GroupId=group_id),
                      "InvalidGroup.NotFound", "DependencyViolation")  # fmt: skip


def kept_volume_ids(found: Found) -> set[str]:
    """The volumes `down` keeps unless named: every volume of the box but a root the
    instance deletes itself. What the instance's mapping keeps at termination or holds at
    the backup device is kept whatever its tags say (a run killed before tagging left none)."""
    ids = {v["VolumeId"] for v in found.volumes}
    for m in (found.instance or {}).get("BlockDeviceMappings", []):
        ebs = m.get("Ebs") or {}
        if not ebs.get("VolumeId"):
            continue
        if m.get("DeviceName") == BACKUP_DEVICE or not ebs.get("DeleteOnTermination", True):
            ids.add(ebs["VolumeId"])
        else:
            ids.discard(ebs["VolumeId"])  # goes with the instance
    return ids


def check_named_volumes(found: Found, named: list[str]) -> list[str]:
    """The volumes named by --delete-backup-volume: each must be one of this box's."""
    mine = kept_volume_ids(found)
    for volume_id in named:
        if volume_id not in mine:
            listed = ", ".join(sorted(mine)) or "none"
            raise UsageError(
                f"--delete-backup-volume {volume_id} is not a kept volume of box {found.name} "
                f"(its kept volumes: {listed}); nothing was removed"
            )
    return list(dict.fromkeys(named))


def _volume_line(found: Found, volume_id: str) -> str:
    v = next((v for v in found.volumes if v["VolumeId"] == volume_id), None)
    role = (aws.tag_dict(v).get(TAG_ROLE) if v else None) or "untagged"
    size = f"{v['Size']} GB, made {str(v.get('CreateTime', '?'))[:19]}" if v else "attached"
    attached = [a["InstanceId"] for a in (v or {}).get("Attachments") or []]
    on = f", on {attached[0]}" if attached else ", not attached"
    return f"{role} volume {volume_id} of box {found.name} ({size}{on})"


def down_plan(
    found: Found, delete_volumes: list[str], delete_bucket: str | None = None
) -> list[str]:
    steps = []
    for a in found.addresses:
        steps.append(f"release Elastic IP {a['PublicIp']} ({a['AllocationId']})")
    if found.instance is not None:
        steps.append(f"terminate {found.instance['InstanceId']} (its root volume goes with it)")
    for volume_id in sorted(kept_volume_ids(found)):
        verb = "DELETE" if volume_id in delete_volumes else "keep"
        steps.append(f"{verb} {_volume_line(found, volume_id)}")
    if found.group is not None:
        steps.append(f"delete security group {found.group['GroupId']} ({found.group['GroupName']})")
    if found.key_pair is not None:
        steps.append(f"delete key pair {found.key_pair['KeyName']} (imported by ec2-install)")
    if found.iam.profile is not None:
        steps.append(f"delete instance profile {found.iam.profile['InstanceProfileName']}")
    if found.iam.role is not None:
        steps.append(f"delete role {found.iam.role['RoleName']} (the box's offsite backups)")
    bucket = found.iam.bucket
    if delete_bucket is not None:
        steps.append(f"DELETE the empty bucket {delete_bucket}")
    elif bucket is not None:
        steps.append(f"keep bucket {bucket} and the backups under {found.name}/")
    return steps


def down(
    ec2: Any, found: Found, delete_volumes: list[str], phases: Phases, region: str,
    iam: Any = None, s3: Any = None, delete_bucket: tuple[str, str] | None = None,
) -> list[str]:  # fmt: skip
    """Remove what is tagged for the box but its volumes, of which only those named go, and
    its offsite bucket, which goes only when named (`delete_bucket`: bucket and account)."""
    removed: list[str] = []
    kept = kept_volume_ids(found)
    for a in found.addresses:
        if a.get("AssociationId"):
            aws.call(
                "disassociating the Elastic IP",
                ec2.disassociate_address,
                AssociationId=a["AssociationId"],
            )
        aws.call("releasing the Elastic IP", ec2.release_address, AllocationId=a["AllocationId"])
        removed.append(f"Elastic IP {a['PublicIp']}")
    if found.instance is not None:
        instance_id = found.instance["InstanceId"]
        with phases.phase("terminate", instance_id), aws.failing(f"terminating {instance_id}"):
            _terminate(ec2, instance_id, delete_kept_volumes=False)
        removed.append(f"instance {instance_id}")
    for volume_id in sorted(kept):
        if volume_id not in delete_volumes:
            phases.say(
                f"kept the {_volume_line(found, volume_id)}; `ec2-install down --region {region} "
                f"--name {found.name} --delete-backup-volume {volume_id}` removes it"
            )
            continue
        with aws.failing(f"deleting volume {volume_id}"):
            _delete_volume(ec2, volume_id)
        removed.append(f"volume {volume_id}")
    if found.group is not None:
        with aws.failing(f"deleting security group {found.group['GroupId']}"):
            _delete_group(ec2, found.group["GroupId"])
        removed.append(f"security group {found.group['GroupId']}")
    if found.key_pair is not None and aws.tag_dict(found.key_pair).get(TAG_TOOL) == TOOL:
        aws.call("deleting the key pair", ec2.delete_key_pair, KeyName=found.key_pair["KeyName"])
        removed.append(f"key pair {found.key_pair['KeyName']}")
    if found.iam.profile is not None:
        name = found.iam.profile["InstanceProfileName"]
        with aws.failing(f"deleting instance profile {name}"):
            offsite.delete_profile(iam, name)
        removed.append(f"instance profile {name}")
    if found.iam.role is not None:
        name = found.iam.role["RoleName"]
        with aws.failing(f"deleting role {name}"):
            offsite.delete_role(iam, name)
        removed.append(f"role {name}")
    if delete_bucket is not None:
        offsite.delete_bucket(s3, *delete_bucket)
        removed.append(f"bucket {delete_bucket[0]}")
    elif (bucket := found.iam.bucket) is not None:
        phases.say(
            f"kept bucket {bucket} and the backups under {found.name}/ "
            f"({offsite.repo_url(bucket, found.name)})"
        )
    return removed
