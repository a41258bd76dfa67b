"""The box's offsite backups: the bucket `up` makes or is given, the role and instance
profile it attaches at launch, what `down` removes and keeps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ec2_install import offsite
from tests.ec2_install.conftest import REGION, Aws, up_args
from tests.ec2_install.test_policy import _findings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # parliament's own regexes
ACCOUNT = "123456789012"  # moto's
BUCKET = f"odbox-backups-{ACCOUNT}-{REGION}"
ROLE = f"odbox-shop-{REGION}"


def _tags(tag_list: list[dict]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tag_list}


def _instance(aws: Aws) -> dict:
    reservations = aws.client().describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    [instance] = [i for r in reservations for i in r["Instances"]]
    return instance


def _roles(aws: Aws) -> tuple[list[str], list[str]]:
    iam = aws.client("iam")
    return (
        [r["RoleName"] for r in iam.list_roles()["Roles"]],
        [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]],
    )


def _buckets(aws: Aws) -> list[str]:
    return [b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]]


def test_up_makes_a_private_versioned_bucket_and_a_role_for_the_box_prefix_only(
    aws: Aws, ssh_pub: Path
):
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 0, result.stderr
    s3, iam = aws.client("s3"), aws.client("iam")
    # the bucket: private, encrypted, versioned, old versions expire
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
    )
    rules = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    [rule] = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == offsite.NONCURRENT_DAYS
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == REGION
    # a box's role may add to what a repository writes once, never overwrite it
    assert json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"]) == (
        offsite.bucket_policy(BUCKET, ACCOUNT)
    )
    assert _tags(s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"])["odbox:managed-by"] == (
        "ec2-install"
    )
    # the role: only EC2 may take it, and it may only read and add under shop/
    role = iam.get_role(RoleName=ROLE)["Role"]
    assert _tags(role["Tags"]) == {"Name": ROLE, "odbox:box": "shop",
                                   "odbox:managed-by": "ec2-install",
                                   "odbox:backup-bucket": BUCKET}  # fmt: skip
    trust = role["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    document = iam.get_role_policy(RoleName=ROLE, PolicyName=offsite.ROLE_POLICY)
    policy = document["PolicyDocument"]
    assert policy == offsite.box_policy(BUCKET, "shop", ACCOUNT)
    granted = {
        (action, statement["Resource"])
        for statement in policy["Statement"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str)
                       else statement["Action"])
    }  # fmt: skip
    assert granted == {
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}"),
        ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/shop/*"),
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/shop/*"),
        ("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/shop/locks/*"),
    }
    # the instance runs with the profile holding that role
    [profile] = iam.list_instance_profiles()["InstanceProfiles"]
    assert profile["InstanceProfileName"] == ROLE
    assert [r["RoleName"] for r in profile["Roles"]] == [ROLE]
    assert _instance(aws)["IamInstanceProfile"]["Arn"] == profile["Arn"]
    # and the user is told the repository and the lines that turn the copies on
    url = f"s3://{BUCKET}/shop"
    assert f"offsite backups: {url}, through the instance's role" in result.stdout
    assert f'odbox.backup.offsite = {{ enable = true; repo = "{url}"; }};' in result.stdout
    status = json.loads(aws.run("status", "--name", "shop", "--json").stdout)
    assert status["offsite"] == {"repo": url, "bucket": BUCKET, "role": ROLE,
                                 "instance_profile": ROLE}  # fmt: skip
    assert status["instance"]["instance_profile"] == profile["Arn"]


def test_the_box_role_and_the_bucket_policy_are_clean_iam_policies():
    assert _findings(offsite.box_policy(BUCKET, "shop", ACCOUNT)) == []
    assert _findings(offsite.bucket_policy(BUCKET, ACCOUNT)) == []


def test_the_box_role_allows_every_call_odbox_backup_makes_for_an_offsite_copy(
    aws: Aws, ssh_pub: Path, tmp_path: Path
):
    """odbox-backup's S3 store, run as the box runs it (`copy all --to`), through the
    proxy: every call it makes is one the role grants, on a key the role grants it on."""
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    # moto applies a bucket policy's Deny without its conditions (If-None-Match, the
    # principal), so it would refuse every PUT: the role alone is what is checked here
    aws.client("s3").delete_bucket_policy(Bucket=BUCKET)
    source = tmp_path / "src"
    (source / "filestore" / "ab").mkdir(parents=True)
    (source / "dump.sql").write_text("CREATE TABLE x();\n")
    (source / "filestore" / "ab" / "abc").write_text("a filestore file\n")
    backup = Path(sys.executable).with_name("odbox-backup")
    env = {**aws.env, "ODBOX_BACKUP_AUTH_KEY_FILE": str(tmp_path / "auth.key")}
    url = f"s3://{BUCKET}/shop"

    def run(*args: str) -> None:
        done = subprocess.run([backup, *args], env=env, capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)  # fmt: skip
        assert done.returncode == 0, (args, done.stderr)

    run("init", "--repo", "repo")
    run("import", "--repo", "repo", str(source), "--db-name", "shop")
    run("init", "--repo", url)  # the admin's, from the laptop
    aws.proxy.clear()
    run("copy", "--repo", "repo", "all", "--to", url)  # the box's timer
    run("copy", "--repo", "repo", "all", "--to", url)  # again: nothing to send
    assert "PutObject" in aws.proxy.actions and "DeleteObject" in aws.proxy.actions
    statements = offsite.box_policy(BUCKET, "shop", ACCOUNT)["Statement"]
    for permission, path in aws.proxy.s3_paths:
        arn = f"arn:aws:s3:::{path.lstrip('/').split('?')[0]}"
        assert any(
            permission in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
            and (arn == s["Resource"] or (s["Resource"].endswith("*")
                                          and arn.startswith(s["Resource"][:-1])))
            for s in statements
        ), (permission, path)  # fmt: skip
        if permission == "s3:ListBucket":
            assert "prefix=shop%2F" in path, path


def test_no_offsite_makes_no_bucket_role_or_profile(aws: Aws, ssh_pub: Path):
    result = aws.run(*up_args(ssh_pub, "--no-offsite"))
    assert result.returncode == 0, result.stderr
    assert _buckets(aws) == [] and _roles(aws) == ([], [])
    # not one IAM, S3 or STS call: credentials without any IAM permission do
    assert {p.partition(":")[0] for p in aws.proxy.permissions} == {"ec2"}
    assert "GetCallerIdentity" not in aws.proxy.actions
    assert "IamInstanceProfile" not in _instance(aws)
    assert "offsite backups" not in result.stdout
    both = aws.run(*up_args(ssh_pub, "--no-offsite", "--backup-bucket", "mine"))
    assert both.returncode == 2 and "not both" in both.stderr


def test_a_given_bucket_is_used_as_it_is_and_kept(aws: Aws, ssh_pub: Path):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="acme-offsite",
                     CreateBucketConfiguration={"LocationConstraint": REGION})  # fmt: skip
    # first with the default bucket, then moved to the given one
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    aws.proxy.clear()
    result = aws.run(*up_args(ssh_pub, "--backup-bucket", "acme-offsite"))
    assert result.returncode == 0, result.stderr
    assert "bucket acme-offsite is not versioned" in result.stderr
    assert not [a for a in aws.proxy.actions if a.startswith(("PutBucket", "PutPublic"))]
    iam = aws.client("iam")
    policy = iam.get_role_policy(RoleName=ROLE, PolicyName=offsite.ROLE_POLICY)
    assert policy["PolicyDocument"] == offsite.box_policy("acme-offsite", "shop", ACCOUNT)
    assert _tags(iam.get_role(RoleName=ROLE)["Role"]["Tags"])["odbox:backup-bucket"] == (
        "acme-offsite"
    )
    assert "offsite backups: s3://acme-offsite/shop" in result.stdout
    down = aws.run("down", "--name", "shop", "--yes")
    assert down.returncode == 0, down.stderr
    assert "kept bucket acme-offsite and the backups under shop/" in down.stdout
    assert _buckets(aws) == ["acme-offsite", BUCKET] and _roles(aws) == ([], [])
    refused = aws.run("down", "--name", "shop", "--yes", "--delete-backup-bucket", "acme-offsite")
    assert refused.returncode == 2 and "deletes only the buckets it made" in refused.stderr
    missing = aws.run(*up_args(ssh_pub, "--backup-bucket", "no-such-bucket"))
    assert missing.returncode == 2
    assert "--backup-bucket no-such-bucket: no such bucket in account" in missing.stderr


def test_down_removes_role_and_profile_and_deletes_the_bucket_only_when_named_and_empty(
    aws: Aws, ssh_pub: Path
):
    assert aws.run(*up_args(ssh_pub)).returncode == 0
    plan = aws.run("down", "--name", "shop", "--dry-run")
    assert f"delete role {ROLE}" in plan.stdout and f"keep bucket {BUCKET}" in plan.stdout
    down = aws.run("down", "--name", "shop", "--yes")
    assert down.returncode == 0, down.stderr
    assert f"kept bucket {BUCKET} and the backups under shop/" in down.stdout
    assert _roles(aws) == ([], []) and _buckets(aws) == [BUCKET]

    s3 = aws.client("s3")
    # (locks/: moto would apply the bucket policy's Deny without its conditions elsewhere)
    s3.put_object(Bucket=BUCKET, Key="shop/locks/held.json", Body=b"{}")
    s3.delete_object(Bucket=BUCKET, Key="shop/locks/held.json")  # a marker and a version
    full = aws.run("down", "--name", "shop", "--yes", "--delete-backup-bucket", BUCKET)
    assert full.returncode == 2, full.stderr
    assert "still holds backups" in full.stderr and _buckets(aws) == [BUCKET]
    for version in s3.list_object_versions(Bucket=BUCKET).get("Versions", []) + (
        s3.list_object_versions(Bucket=BUCKET).get("DeleteMarkers", [])
    ):
        s3.delete_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])
    empty = aws.run("down", "--name", "shop", "--yes", "--delete-backup-bucket", BUCKET)
    assert empty.returncode == 0, empty.stderr
    assert _buckets(aws) == []


def test_a_failed_run_removes_the_bucket_role_and_profile_it_made(aws: Aws, ssh_pub: Path):
    aws.proxy.fail("AllocateAddress")
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert f"instance profile {ROLE}" in line and f"role {ROLE}" in line
    assert f"bucket {BUCKET}" in line
    assert _roles(aws) == ([], []) and _buckets(aws) == []


def test_a_launch_waits_until_ec2_sees_the_new_instance_profile(aws: Aws, ssh_pub: Path):
    # IAM's eventual consistency: EC2 calls a profile made seconds ago invalid
    aws.proxy.fail("RunInstances", "InvalidParameterValue",
                   f"Value ({ROLE}) for parameter iamInstanceProfile.name is invalid. "
                   "Invalid IAM Instance Profile name", status=400, times=2)  # fmt: skip
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 0, result.stderr
    assert aws.proxy.actions.count("RunInstances") == 3
    assert _instance(aws)["IamInstanceProfile"]["Arn"].endswith(f"/{ROLE}")


def test_a_role_of_that_name_not_made_for_the_box_is_refused(aws: Aws, ssh_pub: Path):
    aws.client("iam").create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(
        offsite.TRUST))  # fmt: skip
    result = aws.run(*up_args(ssh_pub))
    assert result.returncode == 2
    assert f"an IAM role named {ROLE} exists without ec2-install's tags" in result.stderr
    assert "RunInstances" not in aws.proxy.actions


@pytest.mark.parametrize("bucket", ["Acme", "a", "acme_backups", "acme.backups"])
def test_a_bad_bucket_name_is_a_usage_error(aws: Aws, ssh_pub: Path, bucket: str):
    result = aws.run(*up_args(ssh_pub, "--backup-bucket", bucket))
    assert result.returncode == 2 and "bad --backup-bucket" in result.stderr
    assert aws.proxy.actions == []  # refused before any AWS call
