"""`down`: remove what is tagged for the box, keeping its volumes and its offsite bucket
unless each is named; and the waits for what AWS frees slowly (an instance, its volumes,
its group)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ec2_install import aws, offsite
from ec2_install.box import Found, describe_instance
from ec2_install.progress import Phases, poll
from ec2_install.spec import (
    BACKUP_DEVICE,
    TAG_ROLE,
    TAG_TOOL,
    TOOL,
)
from odbox_common.errors import ToolError, UsageError

TERMINATE_TIMEOUT = 600.0


def terminate(
    ec2: Any, instance_id: str, *, delete_kept_volumes: bool, spare: str | None = None
) -> None:
    """Terminate, wait until gone; then delete its kept (backup) volumes if asked, but
    never `spare` (a kept volume of an earlier box that this run attached)."""
    instance = describe_instance(ec2, instance_id)
    kept = [
        m["Ebs"]["VolumeId"]
        for m in (instance or {}).get("BlockDeviceMappings", [])
        if "Ebs" in m
        and not m["Ebs"].get("DeleteOnTermination", True)
        and m["Ebs"]["VolumeId"] != spare
    ]
    ec2.terminate_instances(InstanceIds=[instance_id])

    def gone() -> bool:
        i = describe_instance(ec2, instance_id)
        return i is None or i["State"]["Name"] == "terminated"

    poll(f"{instance_id} to terminate", TERMINATE_TIMEOUT, gone)
    if delete_kept_volumes:
        for volume_id in kept:
            delete_volume(ec2, volume_id)


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


def delete_volume(ec2: Any, volume_id: str) -> None:
    # VolumeInUse: still detaching from the terminated instance
    _delete_when_free(f"volume {volume_id}", lambda: ec2.delete_volume(VolumeId=volume_id),
                      "InvalidVolume.NotFound", "VolumeInUse")  # fmt: skip


def delete_group(ec2: Any, group_id: str) -> None:
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
    found: Found, delete_volumes: list[str], bucket_to_delete: str | None = None
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
    if bucket_to_delete is not None:
        steps.append(f"DELETE the empty bucket {bucket_to_delete}")
    elif bucket is not None:
        steps.append(f"keep bucket {bucket} and the backups under {found.name}/")
    return steps


def remove_box(
    ec2: Any, found: Found, delete_volumes: list[str], phases: Phases, region: str,
    iam: Any = None, s3: Any = None, bucket_to_delete: tuple[str, str] | None = None,
) -> list[str]:  # fmt: skip
    """Remove what is tagged for the box but its volumes, of which only those named go, and
    its offsite bucket, which goes only when named (`bucket_to_delete`: bucket and account)."""
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
            terminate(ec2, instance_id, delete_kept_volumes=False)
        removed.append(f"instance {instance_id}")
    for volume_id in sorted(kept):
        if volume_id not in delete_volumes:
            phases.say(
                f"kept the {_volume_line(found, volume_id)}; `ec2-install down --region {region} "
                f"--name {found.name} --delete-backup-volume {volume_id}` removes it"
            )
            continue
        with aws.failing(f"deleting volume {volume_id}"):
            delete_volume(ec2, volume_id)
        removed.append(f"volume {volume_id}")
    if found.group is not None:
        with aws.failing(f"deleting security group {found.group['GroupId']}"):
            delete_group(ec2, found.group["GroupId"])
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
    if bucket_to_delete is not None:
        delete_bucket(s3, *bucket_to_delete)
        removed.append(f"bucket {bucket_to_delete[0]}")
    elif (bucket := found.iam.bucket) is not None:
        phases.say(
            f"kept bucket {bucket} and the backups under {found.name}/ "
            f"({offsite.repo_url(bucket, found.name)})"
        )
    return removed


def check_bucket_to_delete(s3: Any, bucket: str, account: str) -> None:
    """--delete-backup-bucket: only a bucket ec2-install made, and only when empty."""
    if not bucket.startswith(offsite.BUCKET_PREFIX):
        raise UsageError(
            f"--delete-backup-bucket {bucket}: ec2-install deletes only the buckets it made "
            f"({offsite.BUCKET_PREFIX}ACCOUNT-REGION); nothing was removed"
        )
    if offsite.versioning(s3, bucket, account) is None:
        raise UsageError(f"--delete-backup-bucket {bucket}: no such bucket; nothing was removed")
    if not offsite.tagged(s3, bucket, account):
        raise UsageError(
            f"--delete-backup-bucket {bucket} was not made by ec2-install (no {TAG_TOOL} tag); "
            "nothing was removed"
        )
    listed = aws.call(
        f"looking into bucket {bucket}",
        s3.list_object_versions,
        Bucket=bucket,
        MaxKeys=1,
        ExpectedBucketOwner=account,
    )
    if listed.get("Versions") or listed.get("DeleteMarkers"):
        raise UsageError(
            f"--delete-backup-bucket {bucket} still holds backups (objects or their old "
            "versions): ec2-install never deletes backups; empty it yourself (the S3 "
            "console's Empty) if you mean it; nothing was removed"
        )


def delete_bucket(s3: Any, bucket: str, account: str) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.delete_bucket(Bucket=bucket, ExpectedBucketOwner=account)
    except ClientError as e:
        raise ToolError(f"deleting bucket {bucket}: {aws.describe(e)}") from e
