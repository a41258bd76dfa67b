"""The instance: its launch (idempotent by ClientToken, undone even when its answer never
came), the waits until it runs and passes its checks, the kept volume's attach, the tags
of its volumes."""

from __future__ import annotations

from typing import Any

from ec2_install import aws
from ec2_install.box import LIVE_STATES, describe_instance
from ec2_install.down import terminate
from ec2_install.progress import poll
from ec2_install.spec import (
    BACKUP_DEVICE,
    TAG_ROLE,
)
from ec2_install.undo import UndoLog
from ec2_install.want import Want
from odbox_common.errors import ToolError

RUNNING_TIMEOUT = 600.0
STATUS_TIMEOUT = 1200.0
PROFILE_TIMEOUT = 120.0  # IAM's eventual consistency: usually about 10 s


def launch(
    ec2: Any, want: Want, key_name: str, group_id: str, profile: str | None, undo_log: UndoLog
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
            undo_log.made("the instance of this launch", lambda: _undo_launch(ec2, want, params))
        raise aws.AwsError(f"launching the instance: {aws.describe(e)}") from e
    except BaseException:  # Ctrl-C or SIGTERM while the request was on the wire
        undo_log.made("the instance of this launch", lambda: _undo_launch(ec2, want, params))
        raise
    instance: dict[str, Any] = response["Instances"][0]
    instance_id = instance["InstanceId"]

    def undo() -> None:  # the kept volume attached to it is never this run's to delete
        terminate(ec2, instance_id, delete_kept_volumes=True, spare=want.backup_volume_id)

    undo_log.made(f"instance {instance_id} and its volumes", undo)
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
        terminate(ec2, instance_id, delete_kept_volumes=True, spare=want.backup_volume_id)


def wait_running(ec2: Any, instance_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        instance = describe_instance(ec2, instance_id)
        if instance is None:
            return None
        state = instance["State"]["Name"]
        if state in ("shutting-down", "terminated", "stopping", "stopped"):
            reason = instance.get("StateReason", {}).get("Message") or state
            raise ToolError(f"instance {instance_id} is {state}: {reason}")
        return instance if state == "running" else None

    result: dict[str, Any] = poll(f"{instance_id} to run", RUNNING_TIMEOUT, check)
    return result


def wait_status_ok(ec2: Any, instance_id: str, region: str) -> None:
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


def attach_backup(ec2: Any, want: Want, instance: dict[str, Any]) -> dict[str, Any]:
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
        i = describe_instance(ec2, instance["InstanceId"])
        maps = {m["DeviceName"]: m.get("Ebs", {}) for m in (i or {}).get("BlockDeviceMappings", [])}
        return i if maps.get(BACKUP_DEVICE, {}).get("VolumeId") == want.backup_volume_id else None

    result: dict[str, Any] = poll(f"{want.backup_volume_id} to attach", RUNNING_TIMEOUT, attached)
    return result


def tag_volume_roles(
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
