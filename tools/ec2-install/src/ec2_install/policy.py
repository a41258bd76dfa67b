"""The least-privilege IAM policy for ec2-install, printed by `ec2-install policy`.

Reads are allowed everywhere (EC2's Describe calls take no resource). Every
call that makes something must put ec2-install's tag on it, and every call
that changes or removes something works only on resources carrying that tag,
so the policy cannot touch anything else in the account. The offsite backups'
role and instance profile are reached by their name prefix (`odbox-`), the
bucket `up` makes by its (`odbox-backups-`); a bucket given with --backup-bucket
is only read. The tests record the calls each command makes and check they are
exactly these actions.
"""

from __future__ import annotations

import re
from typing import Any

from ec2_install.spec import TAG_ROLE, TAG_TOOL, TOOL
from odbox_common.errors import UsageError

READ = [
    "ec2:DescribeAddresses",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeInstances",
    "ec2:DescribeKeyPairs",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVolumes",
    "ec2:DescribeVpcs",
]
CREATE = ["ec2:AllocateAddress", "ec2:CreateSecurityGroup", "ec2:ImportKeyPair", "ec2:RunInstances"]
CHANGE = [
    "ec2:AssociateAddress",
    "ec2:AttachVolume",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:DeleteKeyPair",
    "ec2:DeleteSecurityGroup",
    "ec2:DeleteVolume",
    "ec2:DisassociateAddress",
    "ec2:ReleaseAddress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:TerminateInstances",
]

_ARN = "arn:aws:ec2:*:*:{}/*"
_REQUEST_TAG = {"StringEquals": {f"aws:RequestTag/{TAG_TOOL}": TOOL}}
_RESOURCE_TAG = {"StringEquals": {f"ec2:ResourceTag/{TAG_TOOL}": TOOL}}


# The box's role and instance profile (offsite.py), all named odbox-NAME-REGION.
ROLE = [
    "iam:CreateRole",
    "iam:DeleteRole",
    "iam:DeleteRolePolicy",
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:PassRole",
    "iam:PutRolePolicy",
    "iam:TagRole",
]
PROFILE = [
    "iam:AddRoleToInstanceProfile",
    "iam:CreateInstanceProfile",
    "iam:DeleteInstanceProfile",
    "iam:GetInstanceProfile",
    "iam:RemoveRoleFromInstanceProfile",
    "iam:TagInstanceProfile",
]
# The bucket `up` makes (odbox-backups-ACCOUNT-REGION), and what `down
# --delete-backup-bucket` needs to see that it is empty and delete it.
BUCKET = [
    "s3:CreateBucket",
    "s3:DeleteBucket",
    "s3:GetBucketTagging",
    "s3:ListBucketVersions",
    "s3:PutBucketPolicy",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketTagging",
    "s3:PutBucketVersioning",
    "s3:PutEncryptionConfiguration",
    "s3:PutLifecycleConfiguration",
]
# Any bucket: whether it exists in this account and keeps versions (--backup-bucket).
BUCKET_READ = ["s3:GetBucketVersioning"]


def actions() -> set[str]:
    return {
        *READ, *CREATE, *CHANGE, "ec2:CreateTags", "ec2:GetConsoleOutput",
        *ROLE, *PROFILE, *BUCKET, *BUCKET_READ,
    }  # fmt: skip


def arns(*kinds: str) -> list[str]:
    return [_ARN.format(k) for k in kinds]


# What a customer-managed KMS key must allow so EC2 can encrypt the box's volumes with it,
# through EC2 only (AWS's "Permissions for EBS encryption").
KMS = [
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
]


def document(
    *,
    kms_key: str | None = None,
    instance_types: tuple[str, ...] = (),
    ami_owners: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The policy; `instance_types` and `ami_owners` narrow what a launch may use, and
    `kms_key` (an ARN) lets EC2 encrypt the volumes with that key."""
    create_actions = [a.removeprefix("ec2:") for a in CREATE]
    instance_condition: dict[str, Any] = {"StringEquals": dict(_REQUEST_TAG["StringEquals"])}
    if instance_types:
        instance_condition["StringEquals"]["ec2:InstanceType"] = list(instance_types)
    image: dict[str, Any] = {
        "Sid": "LaunchImage",
        "Effect": "Allow",
        "Action": "ec2:RunInstances",
        "Resource": "arn:aws:ec2:*::image/*",
    }
    if ami_owners:
        image["Condition"] = {"StringEquals": {"ec2:Owner": list(ami_owners)}}
    statements: list[dict[str, Any]] = [
        {"Sid": "Read", "Effect": "Allow", "Action": READ, "Resource": "*"},
        {
            "Sid": "LaunchInstanceTagged",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": arns("instance"),
            "Condition": instance_condition,
        },
        {
            "Sid": "LaunchVolumeTagged",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": arns("volume"),
            "Condition": _REQUEST_TAG,
        },
        image,
        {
            "Sid": "LaunchFrom",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": arns("subnet", "security-group", "key-pair", "network-interface"),
        },
        {
            "Sid": "CreateTagged",
            "Effect": "Allow",
            "Action": ["ec2:AllocateAddress", "ec2:CreateSecurityGroup", "ec2:ImportKeyPair"],
            "Resource": arns("elastic-ip", "security-group", "key-pair"),
            "Condition": _REQUEST_TAG,
        },
        {
            "Sid": "GroupInVpc",
            "Effect": "Allow",
            "Action": "ec2:CreateSecurityGroup",
            "Resource": arns("vpc"),
        },
        {
            "Sid": "TagAtCreation",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": arns("instance", "volume", "security-group", "key-pair", "elastic-ip"),
            "Condition": {"StringEquals": {"ec2:CreateAction": create_actions}},
        },
        {
            "Sid": "TagVolumeRole",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": arns("volume"),
            "Condition": {
                **_RESOURCE_TAG,
                "ForAllValues:StringEquals": {"aws:TagKeys": [TAG_ROLE]},
            },
        },
        # The SSH host key fingerprints NixOS prints at boot, to pin the key: own boxes only.
        {
            "Sid": "ConsoleOfOwn",
            "Effect": "Allow",
            "Action": "ec2:GetConsoleOutput",
            "Resource": arns("instance"),
            "Condition": _RESOURCE_TAG,
        },
        {
            "Sid": "ChangeOwn",
            "Effect": "Allow",
            "Action": CHANGE,
            "Resource": arns("instance", "volume", "security-group", "key-pair", "elastic-ip"),
            "Condition": _RESOURCE_TAG,
        },
        # An address is (dis)associated through the instance's network interface, which
        # carries no tags of ours; the address and the instance must (ChangeOwn).
        {
            "Sid": "AddressOnInterface",
            "Effect": "Allow",
            "Action": ["ec2:AssociateAddress", "ec2:DisassociateAddress"],
            "Resource": arns("network-interface"),
        },
        # Rules are resources of their own; the group they belong to must be ours (ChangeOwn).
        {
            "Sid": "RulesOfOwnGroup",
            "Effect": "Allow",
            "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"],
            "Resource": arns("security-group-rule"),
        },
    ]
    statements += [
        {
            "Sid": "BoxRole",
            "Effect": "Allow",
            "Action": ROLE,
            "Resource": "arn:aws:iam::*:role/odbox-*",
        },
        {
            "Sid": "BoxInstanceProfile",
            "Effect": "Allow",
            "Action": PROFILE,
            "Resource": "arn:aws:iam::*:instance-profile/odbox-*",
        },
        {
            "Sid": "OffsiteBucket",
            "Effect": "Allow",
            "Action": BUCKET,
            "Resource": "arn:aws:s3:::odbox-backups-*",
        },
        {
            "Sid": "GivenBucket",
            "Effect": "Allow",
            "Action": BUCKET_READ,
            "Resource": "arn:aws:s3:::*",
        },
    ]
    if kms_key is not None:
        statements.append(
            {
                "Sid": "EncryptVolumesWithKey",
                "Effect": "Allow",
                "Action": KMS,
                "Resource": kms_key,
                "Condition": {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


_KMS_ARN = re.compile(r"arn:aws:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_+=,.@-]+")


def check_kms_key(arn: str) -> str:
    if not _KMS_ARN.fullmatch(arn):
        raise UsageError(
            f"--kms-key {arn!r}: give the key's ARN, e.g. "
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        )
    return arn
