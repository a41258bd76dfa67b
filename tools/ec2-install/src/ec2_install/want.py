"""What `up` asks for, resolved and checked before anything is made: the instance type's
architecture, the kept volume to attach, the subnet and VPC, the security group's rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ec2_install import aws, offsite
from ec2_install.amis import Ami
from ec2_install.box import Rule, describe_instance
from ec2_install.spec import (
    KNOWN_GOOD,
    TAG_BOX,
    TAG_TOOL,
    TOOL,
    SshKey,
)
from odbox_common.errors import UsageError

ANYWHERE = ("0.0.0.0/0", "::/0")


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
        instance = describe_instance(ec2, on[0])
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
