"""What is there of a box on EC2 (and IAM): found by its tags, described by `status`.

Every resource is found by its two tags (TAG_BOX = the box's name, TAG_TOOL =
ec2-install), which it carries from the call that makes it; IAM has no tag
filter, so the offsite role and profile are found by their names and checked
by their tags. `up` (up.py) makes only what is missing and undoes what it made
if any step fails; `down` (down.py) removes what the tags name but the volumes
and the bucket, unless asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ec2_install import aws, offsite
from ec2_install.spec import (
    TAG_ROLE,
)
from odbox_common.errors import ToolError

LIVE_STATES = ["pending", "running", "stopping", "stopped"]
MANAGED_PORTS = (22, 80, 443)
# An ingress rule: protocol ("tcp", or "-1" for all), first port, last port, CIDR.
Rule = tuple[str, int, int, str]


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


def group_rules(group: dict[str, Any]) -> set[Rule]:
    rules: set[Rule] = set()
    for p in group.get("IpPermissions", []):
        ports = (p.get("FromPort", -1), p.get("ToPort", -1))
        for r in p.get("IpRanges", []):
            rules.add((p["IpProtocol"], *ports, r["CidrIp"]))
        for r in p.get("Ipv6Ranges", []):
            rules.add((p["IpProtocol"], *ports, r["CidrIpv6"]))
    return rules


def is_managed(rule: Rule) -> bool:
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


def permission_of(rule: Rule) -> dict[str, Any]:
    protocol, first, last, cidr = rule
    ranges = (
        {"Ipv6Ranges": [{"CidrIpv6": cidr}]} if ":" in cidr else {"IpRanges": [{"CidrIp": cidr}]}
    )
    ports = {} if protocol == "-1" else {"FromPort": first, "ToPort": last}
    return {"IpProtocol": protocol, **ports, **ranges}


def status_document(ec2: Any, name: str, region: str, iam: Any = None) -> dict[str, Any]:
    """The box as one JSON-ready document (state "absent" when nothing is tagged for it);
    every key always there, null for what the box lacks (schema 1: a key added keeps it,
    one renamed or removed makes it 2)."""
    found = find(ec2, name, iam, region)
    doc: dict[str, Any] = {"schema": 1, "box": name, "region": region, "state": None}
    doc.update(dict.fromkeys(("instance", "address", "security_group", "key_pair", "offsite",
                              "ssh")), volumes=[])  # fmt: skip
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
                for p, first, last, c in sorted(group_rules(found.group))
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
    ip = (doc["address"] or {}).get("public_ip") or (instance or {}).get("PublicIpAddress")
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


def describe_instance(ec2: Any, instance_id: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as e:  # a new instance can be unknown for a moment (eventual consistency)
        if e.response.get("Error", {}).get("Code") == "InvalidInstanceID.NotFound":
            return None
        raise
    return reservations[0]["Instances"][0] if reservations else None
