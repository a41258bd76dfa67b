"""Runs killed or interrupted at each step, each followed by a re-run and a `down`:
never an orphan, never a lost backup volume."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.ec2_install.conftest import Aws, backup_volume, up_args


def _live_instances(ec2) -> list[dict]:
    reservations = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def _role(volume: dict) -> str | None:
    return {t["Key"]: t["Value"] for t in volume.get("Tags", [])}.get("odbox:volume")


def _nothing_but(ec2, volume_ids: set[str], aws: Aws | None = None) -> None:
    """Nothing of the box is left but these volumes (and, with `aws`, no role or instance
    profile, and the offsite bucket kept)."""
    if aws is not None:
        iam = aws.client("iam")
        assert iam.list_roles()["Roles"] == []
        assert iam.list_instance_profiles()["InstanceProfiles"] == []
        buckets = [b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]]
        assert buckets == ["odbox-backups-123456789012-eu-west-1"]
    assert _live_instances(ec2) == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups if g["GroupName"] != "default"] == []
    assert {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} == volume_ids


def test_down_keeps_the_backup_volume_of_a_box_killed_before_its_volumes_were_tagged(
    aws: Aws, ssh_pub: Path
):
    code, _, _ = aws.signalled_at("CreateTags", signal.SIGKILL, *up_args(ssh_pub))
    assert code == -signal.SIGKILL
    ec2 = aws.client()
    backup = backup_volume(aws)
    assert _role(ec2.describe_volumes(VolumeIds=[backup])["Volumes"][0]) is None
    down = aws.run("down", "--name", "shop", "--yes")
    assert down.returncode == 0, down.stderr
    assert f"kept the untagged volume {backup} of box shop" in down.stdout
    _nothing_but(ec2, {backup})


def test_a_re_run_tags_the_volumes_a_killed_first_run_left_untagged(aws: Aws, ssh_pub: Path):
    aws.signalled_at("CreateTags", signal.SIGKILL, *up_args(ssh_pub))
    again = aws.run(*up_args(ssh_pub))
    assert again.returncode == 0, again.stderr
    [instance] = _live_instances(aws.client())
    roles = {
        m["DeviceName"]: _role(
            aws.client().describe_volumes(VolumeIds=[m["Ebs"]["VolumeId"]])["Volumes"][0]
        )
        for m in instance["BlockDeviceMappings"]
    }
    assert roles == {"/dev/xvda": "root", "/dev/sdf": "backup"}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_during_run_instances_leaves_no_instance(aws: Aws, ssh_pub: Path, signum):
    # the signal lands while RunInstances is on the wire: AWS makes the instance, the
    # tool never hears of it
    code, out, err = aws.signalled_at("RunInstances", signum, *up_args(ssh_pub))
    assert code == 130, err
    assert "interrupted during launch; removed what this run made" in out
    assert "the instance of this launch" in out
    _nothing_but(aws.client(), set())


STEPS = ["ImportKeyPair", "CreateSecurityGroup", "AuthorizeSecurityGroupIngress",
         "CreateBucket", "PutBucketVersioning", "PutBucketTagging", "CreateRole",
         "PutRolePolicy", "CreateInstanceProfile", "AddRoleToInstanceProfile",
         "RunInstances", "CreateTags", "AllocateAddress", "AssociateAddress",
         "DescribeInstanceStatus"]  # fmt: skip


@pytest.mark.parametrize("action", STEPS)
def test_a_run_killed_at_each_step_is_repaired_by_the_next_and_down_keeps_the_backup(
    aws: Aws, ssh_pub: Path, action: str
):
    code, _, _ = aws.signalled_at(action, signal.SIGKILL, *up_args(ssh_pub))
    assert code == -signal.SIGKILL
    again = aws.run(*up_args(ssh_pub))
    assert again.returncode == 0, again.stderr
    ec2 = aws.client()
    [instance] = _live_instances(ec2)  # adopted, never a second one
    backup = backup_volume(aws)
    assert _role(ec2.describe_volumes(VolumeIds=[backup])["Volumes"][0]) == "backup"
    [address] = ec2.describe_addresses()["Addresses"]
    assert address["InstanceId"] == instance["InstanceId"]
    # the offsite side finished too: a versioned bucket, the role with its policy in the
    # profile the instance runs with
    s3, iam = aws.client("s3"), aws.client("iam")
    bucket = "odbox-backups-123456789012-eu-west-1"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    role = "odbox-shop-eu-west-1"
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["odbox-offsite-backups"]
    profile = iam.get_instance_profile(InstanceProfileName=role)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [role]
    assert instance["IamInstanceProfile"]["Arn"] == profile["Arn"]
    down = aws.run("down", "--name", "shop", "--yes")
    assert down.returncode == 0, down.stderr
    _nothing_but(ec2, {backup}, aws)


def test_delete_backup_volume_deletes_only_the_volumes_it_names(aws: Aws, ssh_pub: Path):
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    first = backup_volume(aws)
    assert aws.run("down", "--name", "shop", "--yes").returncode == 0
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    second = backup_volume(aws)

    plan = aws.run("down", "--name", "shop", "--dry-run", "--delete-backup-volume", second)
    assert plan.returncode == 0, plan.stderr
    assert f"DELETE backup volume {second} of box shop" in plan.stdout
    assert f"keep backup volume {first} of box shop" in plan.stdout

    stranger = aws.client().create_volume(Size=3, AvailabilityZone="eu-west-1a")["VolumeId"]
    refused = aws.run("down", "--name", "shop", "--yes", "--delete-backup-volume", stranger)
    assert refused.returncode == 2
    assert f"{stranger} is not a kept volume of box shop" in refused.stderr
    assert len(_live_instances(aws.client())) == 1

    down = aws.run("down", "--name", "shop", "--yes", "--delete-backup-volume", second)
    assert down.returncode == 0, down.stderr
    _nothing_but(aws.client(), {first, stranger})


def test_up_attaches_a_kept_backup_volume_in_its_zone_and_a_rollback_keeps_it(
    aws: Aws, ssh_pub: Path
):
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    kept = backup_volume(aws)
    assert aws.run("down", "--name", "shop", "--yes").returncode == 0
    ec2 = aws.client()
    zone = ec2.describe_volumes(VolumeIds=[kept])["Volumes"][0]["AvailabilityZone"]

    # a launch that fails after the attach never deletes the kept volume
    aws.proxy.fail("AllocateAddress")
    failed = aws.run(*up_args(ssh_pub, "--backup-volume-id", kept))
    assert failed.returncode == 1, failed.stderr
    assert "AttachVolume" in aws.proxy.actions
    _nothing_but(ec2, {kept})
    aws.proxy.clear()

    result = aws.run(*up_args(ssh_pub, "--backup-volume-id", kept))
    assert result.returncode == 0, result.stderr
    [instance] = _live_instances(ec2)
    assert instance["Placement"]["AvailabilityZone"] == zone
    at = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}
    assert at["/dev/sdf"] == kept and len(ec2.describe_volumes()["Volumes"]) == 2
    again = aws.run(*up_args(ssh_pub, "--backup-volume-id", kept))
    assert again.returncode == 0, again.stderr
    assert aws.run("down", "--name", "shop", "--yes").returncode == 0
    _nothing_but(ec2, {kept})


def test_a_backup_volume_of_another_box_or_in_use_is_refused(aws: Aws, ssh_pub: Path):
    assert aws.run(*up_args(ssh_pub, name="stage")).returncode == 0
    theirs = backup_volume(aws, "stage")
    in_use = aws.run(*up_args(ssh_pub, "--backup-volume-id", theirs))
    assert in_use.returncode == 2
    assert f"{theirs} is not a kept volume of box shop (it is tagged for stage)" in in_use.stderr
    missing = aws.run(*up_args(ssh_pub, "--backup-volume-id", "vol-0123456789abcdef0"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "RunInstances" not in aws.proxy.actions[-5:]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT])
def test_a_run_stopped_while_attaching_a_kept_volume_never_loses_it(
    aws: Aws, ssh_pub: Path, signum: int
):
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    kept = backup_volume(aws)
    assert aws.run("down", "--name", "shop", "--yes").returncode == 0
    args = up_args(ssh_pub, "--backup-volume-id", kept)
    code, _, err = aws.signalled_at("AttachVolume", signum, *args)
    assert code == (-signal.SIGKILL if signum == signal.SIGKILL else 130), err
    ec2 = aws.client()
    assert kept in {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    again = aws.run(*args)
    assert again.returncode == 0, again.stderr
    assert backup_volume(aws) == kept
    assert aws.run("down", "--name", "shop", "--yes").returncode == 0
    _nothing_but(ec2, {kept})
