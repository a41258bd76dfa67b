"""`up`, `status`, `down` against moto server, through the recording proxy."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.ec2_install.conftest import Aws, backup_volume, up_args

TAGS = {"odbox:box": "shop", "odbox:managed-by": "ec2-install"}


def _tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _live_instances(ec2) -> list[dict]:
    reservations = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def test_up_makes_a_secure_box_and_prints_how_to_go_on(aws: Aws, ssh_pub: Path):
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 0, result.stderr
    ec2 = aws.client()

    [instance] = _live_instances(ec2)
    # 1. the newest stable official NixOS image of the type's architecture (arm64)
    image = ec2.describe_images(ImageIds=[instance["ImageId"]])["Images"][0]
    assert image["Name"] == "nixos/25.05.813814.9e7a3a27bbf3-aarch64-linux"
    assert image["OwnerId"] == "427812963091"
    # 2. IMDSv2, tags, volumes, group, key, address
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["KeyName"] == "odbox-shop"
    assert _tags(instance) == {**TAGS, "Name": "shop"}
    mappings = {m["DeviceName"]: m["Ebs"] for m in instance["BlockDeviceMappings"]}
    assert mappings["/dev/xvda"]["DeleteOnTermination"] is True
    assert mappings["/dev/sdf"]["DeleteOnTermination"] is False
    volumes = {v["VolumeId"]: v for v in ec2.describe_volumes()["Volumes"]}
    root, backup = (
        volumes[mappings["/dev/xvda"]["VolumeId"]],
        volumes[mappings["/dev/sdf"]["VolumeId"]],
    )
    assert (root["Size"], root["VolumeType"], root["Encrypted"]) == (200, "gp3", True)
    assert (backup["Size"], backup["VolumeType"], backup["Encrypted"]) == (10, "gp3", True)
    assert _tags(root) == {**TAGS, "Name": "shop", "odbox:volume": "root"}
    assert _tags(backup) == {**TAGS, "Name": "shop", "odbox:volume": "backup"}

    [group] = [
        g
        for g in ec2.describe_security_groups()["SecurityGroups"]
        if g["GroupName"] == "odbox-shop"
    ]
    assert _tags(group) == {**TAGS, "Name": "odbox-shop"}
    rules = set()
    for p in group["IpPermissions"]:
        assert (p["IpProtocol"], p["FromPort"]) == ("tcp", p["ToPort"])
        rules |= {(p["FromPort"], r["CidrIp"]) for r in p.get("IpRanges", [])}
        rules |= {(p["FromPort"], r["CidrIpv6"]) for r in p.get("Ipv6Ranges", [])}
    assert rules == {(22, "203.0.113.7/32"), (80, "0.0.0.0/0"), (80, "::/0"),
                     (443, "0.0.0.0/0"), (443, "::/0")}  # fmt: skip
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group["GroupId"]]

    [pair] = ec2.describe_key_pairs(KeyNames=["odbox-shop"])["KeyPairs"]
    assert _tags(pair)["odbox:box"] == "shop"
    [address] = ec2.describe_addresses()["Addresses"]
    assert address["InstanceId"] == instance["InstanceId"]
    assert _tags(address) == {**TAGS, "Name": "shop"}

    # every resource got its tags in the call that made it (no CreateTags but the volume roles)
    assert aws.proxy.actions.count("CreateTags") == 2

    # 9. the end: the SSH command and the next steps
    ip = address["PublicIp"]
    assert f"box shop is up: {instance['InstanceId']}" in result.stdout
    assert f"ssh root@{ip}\n" in result.stdout
    assert "install: run the same `ec2-install up` without --no-install" in result.stdout
    # off a terminal, each phase is a plain timestamped line
    for phase in ("launch", "running", "status checks", "address"):
        assert f"ec2-install: {phase}: done in" in result.stdout, phase


def test_the_user_data_prepares_the_disk_only_and_holds_no_secret(aws: Aws, ssh_pub: Path):
    env = {**aws.env, "AWS_SESSION_TOKEN": "token-that-must-not-leak"}
    assert aws.run(*up_args(ssh_pub), env=env).returncode == 0
    ec2 = aws.client()
    [instance] = _live_instances(ec2)
    raw = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    script = base64.b64decode(raw["UserData"]["Value"]).decode()
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "BOX=shop\nBACKUP_GB=10\n" in script
    assert "github:acme" not in script and "nixos-rebuild" not in script
    for secret in ("testing", "token-that-must-not-leak", "PRIVATE KEY", "AGE-SECRET-KEY",
                   ssh_pub.read_text().split()[1]):  # fmt: skip
        assert secret not in script


def test_running_up_again_makes_nothing_new(aws: Aws, ssh_pub: Path):
    first = aws.run(*up_args(ssh_pub))
    assert first.returncode == 0, first.stderr
    aws.proxy.actions.clear()
    again = aws.run(*up_args(ssh_pub))
    assert again.returncode == 0, again.stderr
    assert aws.proxy.mutating() == []
    assert "was already there" in again.stdout
    assert len(_live_instances(aws.client())) == 1
    assert len(aws.client().describe_addresses()["Addresses"]) == 1


def test_up_again_with_another_ssh_cidr_moves_only_the_ssh_rule(aws: Aws, ssh_pub: Path):
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    aws.proxy.actions.clear()
    args = up_args(ssh_pub)
    args[args.index("203.0.113.7/32")] = "198.51.100.0/24"
    result = aws.run(*args)
    assert result.returncode == 0, result.stderr
    assert sorted(aws.proxy.mutating()) == [
        "AuthorizeSecurityGroupIngress",
        "RevokeSecurityGroupIngress",
    ]
    status = json.loads(aws.run("status", "--name", "shop", "--json").stdout)
    assert {(r["from_port"], r["cidr"]) for r in status["security_group"]["ingress"]} == {
        (22, "198.51.100.0/24"),
        (80, "0.0.0.0/0"),
        (80, "::/0"),
        (443, "0.0.0.0/0"),
        (443, "::/0"),
    }


def test_a_failure_part_way_removes_what_that_run_made(aws: Aws, ssh_pub: Path):
    aws.proxy.fail("AllocateAddress", "AddressLimitExceeded",
                   "The maximum number of addresses has been reached.", status=400)  # fmt: skip
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert (
        "address failed: allocating an Elastic IP: AllocateAddress failed: AddressLimitExceeded"
        in line
    )
    assert "removed what this run made" in line
    ec2 = aws.client()
    assert _live_instances(ec2) == []
    assert ec2.describe_volumes()["Volumes"] == []  # the kept backup volume went too
    assert [
        g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
    ] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    # and the next run, once AWS agrees, makes the whole box
    aws.proxy.clear()
    assert aws.run(*up_args(ssh_pub)).returncode == 0


def test_an_early_failure_leaves_nothing_behind(aws: Aws, ssh_pub: Path):
    aws.proxy.fail("AuthorizeSecurityGroupIngress")
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 1
    assert "UnauthorizedOperation" in result.stderr and "ec2-install policy" in result.stderr
    ec2 = aws.client()
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [
        g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
    ] == []
    assert "RunInstances" not in aws.proxy.actions


def test_a_failing_rollback_says_what_is_left(aws: Aws, ssh_pub: Path):
    aws.proxy.fail("AllocateAddress")
    aws.proxy.fail("DeleteSecurityGroup", "InternalError", "try again", status=400)
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 1
    assert "could NOT remove security group sg-" in result.stderr
    assert "`ec2-install down` retries" in result.stderr
    aws.proxy.clear()
    down = aws.run("down", "--name", "shop", "--yes")
    assert down.returncode == 0, down.stderr
    ec2 = aws.client()
    assert [
        g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
    ] == []


def test_down_keeps_the_backup_volume_unless_told(aws: Aws, ssh_pub: Path):
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    ec2 = aws.client()
    [instance] = _live_instances(ec2)
    backup_id = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}[
        "/dev/sdf"
    ]

    result = aws.run("down", "--name", "shop", "--yes")
    assert result.returncode == 0, result.stderr
    assert _live_instances(ec2) == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [
        g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
    ] == []
    assert [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]] == [backup_id]
    assert f"kept the backup volume {backup_id}" in result.stdout

    status = aws.run("status", "--name", "shop", "--json")
    assert status.returncode == 0
    doc = json.loads(status.stdout)
    assert doc["state"] == "down"
    assert [(v["id"], v["role"], v["attached_to"]) for v in doc["volumes"]] == [
        (backup_id, "backup", None)
    ]

    # a new box next to the kept volume says so and gets its own
    again = aws.run(*up_args(ssh_pub))
    assert again.returncode == 0
    assert f"the backup volume {backup_id} of an earlier shop is kept" in again.stderr

    both = ["--delete-backup-volume", backup_id, "--delete-backup-volume", backup_volume(aws)]
    assert aws.run("down", "--name", "shop", "--yes", *both).returncode == 0
    assert ec2.describe_volumes()["Volumes"] == []
    nothing = aws.run("down", "--name", "shop", "--yes")
    assert nothing.returncode == 0 and "nothing to remove" in nothing.stdout


def test_down_touches_nothing_of_another_box_or_untagged(aws: Aws, ssh_pub: Path):
    assert aws.run(*up_args(ssh_pub, name="shop")).returncode == 0
    assert aws.run(*up_args(ssh_pub, name="stage")).returncode == 0
    ec2 = aws.client()
    only_box_tag = [{"ResourceType": "volume", "Tags": [{"Key": "odbox:box", "Value": "shop"}]}]
    foreign = ec2.create_volume(Size=5, AvailabilityZone="eu-west-1a",
                                TagSpecifications=only_box_tag)  # fmt: skip
    delete = ["--delete-backup-volume", backup_volume(aws, "shop")]
    assert aws.run("down", "--name", "shop", "--yes", *delete).returncode == 0
    [left] = _live_instances(ec2)
    assert _tags(left)["odbox:box"] == "stage"
    ids = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert foreign["VolumeId"] in ids and len(ids) == 3


def test_status_json_describes_the_box(aws: Aws, ssh_pub: Path):
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    result = aws.run("status", "--name", "shop", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["state"] == "running" and doc["region"] == "eu-west-1"
    assert doc["instance"]["type"] == "m6g.xlarge" and doc["instance"]["architecture"] == "arm64"
    assert doc["instance"]["imdsv2_required"] is True
    assert doc["address"]["instance"] == doc["instance"]["id"]
    assert doc["ssh"] == f"ssh root@{doc['address']['public_ip']}"
    roles = {v["role"]: v for v in doc["volumes"]}
    assert roles["root"]["size_gb"] == 200 and roles["root"]["delete_on_termination"] is True
    assert roles["backup"]["size_gb"] == 10 and roles["backup"]["delete_on_termination"] is False
    assert all(v["encrypted"] and v["type"] == "gp3" for v in doc["volumes"])
    assert doc["key_pair"] == {"name": "odbox-shop", "made_by_ec2_install": True}
    text = aws.run("status", "--name", "shop")
    assert "IMDSv2 required" in text.stdout and "backup volume" in text.stdout
    absent = aws.run("status", "--name", "nobox")
    assert absent.returncode == 1 and "no box named nobox in eu-west-1" in absent.stderr


def test_dry_run_prints_the_plan_and_makes_no_mutating_call(aws: Aws, ssh_pub: Path):
    result = aws.run(*up_args(ssh_pub, "--dry-run"))
    assert result.returncode == 0, result.stderr
    assert aws.proxy.mutating() == []
    assert aws.proxy.actions, "the plan reads what is there"
    plan = result.stdout
    for step in ("import key pair odbox-shop (ssh-ed25519 SHA256:",
                 "create security group odbox-shop",
                 "allow tcp 22 from 203.0.113.7/32", "launch m6g.xlarge (arm64)",
                 "200 GB gp3 encrypted root", "allocate an Elastic IP"):  # fmt: skip
        assert step in plan, step
    assert _live_instances(aws.client()) == []

    assert aws.run(*up_args(ssh_pub)).returncode == 0
    aws.proxy.actions.clear()
    down = aws.run("down", "--name", "shop", "--dry-run")
    assert (
        down.returncode == 0
        and "terminate i-" in down.stdout
        and "keep backup volume" in down.stdout
    )
    assert aws.proxy.mutating() == []
    assert len(_live_instances(aws.client())) == 1


def test_down_off_a_terminal_needs_yes(aws: Aws, ssh_pub: Path):
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    result = aws.run("down", "--name", "shop")
    assert result.returncode == 2 and "give --yes" in result.stderr
    assert len(_live_instances(aws.client())) == 1


def test_up_again_keeps_ports_22_80_443_exact_and_leaves_other_rules(aws: Aws, ssh_pub: Path):
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    ec2 = aws.client()
    [group] = ec2.describe_security_groups(GroupNames=["odbox-shop"])["SecurityGroups"]

    def rule(first: int, last: int, cidr: str) -> dict:
        return {
            "IpProtocol": "tcp",
            "FromPort": first,
            "ToPort": last,
            "IpRanges": [{"CidrIp": cidr}],
        }

    ec2.authorize_security_group_ingress(
        GroupId=group["GroupId"],
        IpPermissions=[rule(9100, 9100, "10.0.0.0/8"), rule(20, 65535, "0.0.0.0/0")],
    )
    before = json.loads(aws.run("status", "--name", "shop", "--json").stdout)
    assert {"protocol": "tcp", "from_port": 20, "to_port": 65535, "cidr": "0.0.0.0/0"} in (
        before["security_group"]["ingress"]
    )
    plan = aws.run(*up_args(ssh_pub, "--dry-run")).stdout
    assert "revoke tcp 20-65535 from 0.0.0.0/0" in plan
    assert "leave (not 22/80/443) tcp 9100 from 10.0.0.0/8" in plan
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 0, result.stderr
    assert "also allows tcp 9100 from 10.0.0.0/8; left as it is" in result.stdout
    after = json.loads(aws.run("status", "--name", "shop", "--json").stdout)
    rules = {(r["from_port"], r["to_port"], r["cidr"]) for r in after["security_group"]["ingress"]}
    web = {(port, port, cidr) for port in (80, 443) for cidr in ("0.0.0.0/0", "::/0")}
    assert rules == {(22, 22, "203.0.113.7/32"), (9100, 9100, "10.0.0.0/8"), *web}


def test_up_on_a_stopped_box_says_to_start_it_and_changes_nothing(aws: Aws, ssh_pub: Path):
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    ec2 = aws.client()
    [instance] = _live_instances(ec2)
    ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    aws.proxy.actions.clear()
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 1
    assert (
        "is stopped: start it (aws ec2 start-instances --region eu-west-1 --instance-ids "
        f"{instance['InstanceId']})" in result.stderr
    )
    assert aws.proxy.mutating() == []


def test_a_failed_termination_in_rollback_keeps_the_group_and_says_so(aws: Aws, ssh_pub: Path):
    aws.proxy.fail("AllocateAddress")
    aws.proxy.fail("TerminateInstances")
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "could NOT remove instance i-" in line
    assert "security group sg-" in line and "(kept: what uses it is still there)" in line
    assert "DeleteSecurityGroup" not in aws.proxy.actions  # no 10-minute wait on a group in use
    assert "DeleteKeyPair" in aws.proxy.actions  # the key pair does not depend on the instance
    aws.proxy.clear()
    status = json.loads(aws.run("status", "--name", "shop", "--json").stdout)
    assert status["state"] == "running"
    delete = ["--delete-backup-volume", backup_volume(aws)]
    assert aws.run("down", "--name", "shop", "--yes", *delete).returncode == 0
    assert aws.client().describe_volumes()["Volumes"] == []


def test_down_needs_the_name(aws: Aws):
    result = aws.run("down", "--yes")
    assert result.returncode == 2 and "--name" in result.stderr


def test_the_printed_commands_name_the_region(aws: Aws, ssh_pub: Path):
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 0, result.stderr
    assert "ec2-install status --region eu-west-1 --name shop" in result.stdout
    assert "ec2-install down --region eu-west-1 --name shop" in result.stdout
    down = aws.run("down", "--name", "shop", "--yes")
    assert (
        f"down --region eu-west-1 --name shop --delete-backup-volume {backup_id(down.stdout)}"
        in (down.stdout)
    )


def backup_id(text: str) -> str:
    return text.split("--delete-backup-volume ", 1)[1].split()[0].rstrip("`")


def test_a_reader_that_goes_away_does_not_roll_back_the_box(aws: Aws, ssh_pub: Path):
    # `up ... | head -1`: the pipe's reader is gone before the first line is written
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    try:
        process = subprocess.run(
            [sys.executable, "-m", "ec2_install", *up_args(ssh_pub)], env=aws.env, cwd=aws.home,
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
    finally:
        os.close(write)
    assert process.returncode == 0, process.stderr
    assert "rollback" not in process.stderr
    assert len(_live_instances(aws.client())) == 1
