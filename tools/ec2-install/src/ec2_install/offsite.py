"""The box's offsite backups: an S3 bucket, and the role its instance profile gives the box.

The bucket `odbox-backups-ACCOUNT-REGION` (or one given with --backup-bucket) holds one
prefix per box, `NAME/`: odbox-backup's offsite repository `s3://BUCKET/NAME`. The role
`odbox-NAME-REGION` (IAM is global, box names are per region) lets the box do exactly
what odbox-backup's S3 store calls there, and no more: read, list and write under its
prefix, and delete only its own lock files. It cannot delete or overwrite a snapshot for
good: the bucket keeps every version, and the role has no DeleteObjectVersion and
cannot change the bucket. Pruning runs from the admin's machine, with the admin's
credentials; a lifecycle rule then frees the versions prune left behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ec2_install import aws
from ec2_install.spec import TAG_BOX, TAG_TOOL, TOOL
from odbox_common.errors import UsageError

BUCKET_PREFIX = "odbox-backups-"
ROLE_POLICY = "odbox-offsite-backups"
TAG_BUCKET = "odbox:backup-bucket"
# How long S3 keeps a version the admin's prune deleted or the box overwrote: the window
# in which a damaged or hostile change to the offsite can still be undone.
NONCURRENT_DAYS = 30

TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def role_name(name: str, region: str) -> str:
    return f"odbox-{name}-{region}"


def default_bucket(account: str, region: str) -> str:
    return f"{BUCKET_PREFIX}{account}-{region}"


def repo_url(bucket: str, name: str) -> str:
    return f"s3://{bucket}/{name}"


def box_policy(bucket: str, name: str, account: str) -> dict[str, Any]:
    """What the box may do: odbox-backup's S3 store calls (store.py) under its prefix.

    GetObject also answers HeadObject; ListBucket is what makes a missing key a 404
    rather than a 403 (the store's `exists`), which is why its prefix condition is
    IfExists: a HeadObject carries no prefix. aws:ResourceAccount keeps the box off a
    bucket of the same name in another account."""
    own = {"StringEquals": {"aws:ResourceAccount": account}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListOwnPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {**own, "StringLikeIfExists": {"s3:prefix": [f"{name}/*"]}},
            },
            {
                "Sid": "ReadAndAddUnderOwnPrefix",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": f"arn:aws:s3:::{bucket}/{name}/*",
                "Condition": own,
            },
            {
                "Sid": "ReleaseOwnLocks",
                "Effect": "Allow",
                "Action": "s3:DeleteObject",
                "Resource": f"arn:aws:s3:::{bucket}/{name}/locks/*",
                "Condition": own,
            },
        ],
    }


# The parts of a repository written once (odbox-backup's FORMAT.md); locks/ is rewritten.
WRITE_ONCE = ("config.json", "objects/*", "packs/*", "index/*", "snapshots/*")


def bucket_policy(bucket: str, account: str) -> dict[str, Any]:
    """The bucket's own policy: a box's role (odbox-…) may not overwrite what a
    repository writes once. IAM cannot tell a new object from an overwrite by action
    name; S3 can, by the If-None-Match header odbox-backup sends on every such PUT
    (i22b's append-only layout). One statement for every box of the bucket."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "BoxesCreateOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": [f"arn:aws:s3:::{bucket}/*/{part}" for part in WRITE_ONCE],
                "Condition": {
                    "Null": {"s3:if-none-match": "true"},
                    "ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{account}:role/odbox-*"},
                },
            }
        ],
    }


@dataclass(frozen=True)
class Offsite:
    """What `up` wants for the offsite copies (None on the Want: --no-offsite)."""

    bucket: str
    given: bool  # --backup-bucket: the user's bucket, checked but never changed
    account: str
    role: str

    def url(self, name: str) -> str:
        return repo_url(self.bucket, name)


@dataclass
class FoundIam:
    role: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None

    @property
    def bucket(self) -> str | None:
        return aws.tag_dict(self.role).get(TAG_BUCKET) if self.role else None


def _code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def account_of(sts: Any) -> str:
    return str(aws.call("reading the account's ID", sts.get_caller_identity)["Account"])


def want(sts: Any, s3: Any, name: str, region: str, bucket: str | None) -> Offsite:
    """Resolve --backup-bucket (a bucket of this account) or the default name."""
    account = account_of(sts)
    role = role_name(name, region)
    if bucket is None:
        return Offsite(default_bucket(account, region), False, account, role)
    state = versioning(s3, bucket, account)
    if state is None:
        raise UsageError(
            f"--backup-bucket {bucket}: no such bucket in account {account}; leave the option "
            f"out and `up` makes {default_bucket(account, region)}"
        )
    return Offsite(bucket, True, account, role)


def versioning(s3: Any, bucket: str, account: str) -> str | None:
    """The bucket's versioning ("" when never set), or None when it does not exist; a
    bucket of another account is refused (its owner could read the box's backups)."""
    from botocore.exceptions import ClientError

    try:
        answer = s3.get_bucket_versioning(Bucket=bucket, ExpectedBucketOwner=account)
    except ClientError as e:
        if _code(e) == "NoSuchBucket":
            return None
        if _code(e) in ("AccessDenied", "403"):
            raise UsageError(
                f"bucket {bucket} belongs to another account, or ec2-install may not read it "
                f"(`ec2-install policy` prints what it needs): give --backup-bucket with a "
                f"bucket of account {account}"
            ) from None
        raise aws.AwsError(f"looking up bucket {bucket}: {aws.describe(e)}") from e
    return str(answer.get("Status") or "")


def tagged(s3: Any, bucket: str, account: str) -> bool:
    answer = aws.call_unless(
        f"reading the tags of bucket {bucket}",
        "NoSuchTagSet",
        s3.get_bucket_tagging,
        Bucket=bucket,
        ExpectedBucketOwner=account,
    )
    tags = (answer or {}).get("TagSet", [])
    return {t["Key"]: t["Value"] for t in tags}.get(TAG_TOOL) == TOOL  # fmt: skip


def find_iam(iam: Any, name: str, region: str) -> FoundIam:
    """The box's role and instance profile (by name: IAM has no tag filter), if ours."""
    found = FoundIam()
    role = role_name(name, region)
    for kind, get in (("role", iam.get_role), ("profile", iam.get_instance_profile)):
        key = "RoleName" if kind == "role" else "InstanceProfileName"
        answer = aws.call_unless(f"looking up the box's {kind} {role}", "NoSuchEntity", get,
                                 **{key: role})  # fmt: skip
        if answer is None:
            continue
        resource = answer["Role" if kind == "role" else "InstanceProfile"]
        tags = aws.tag_dict(resource)
        if tags.get(TAG_TOOL) != TOOL or tags.get(TAG_BOX) != name:
            raise UsageError(
                f"an IAM {kind} named {role} exists without ec2-install's tags for box {name}: "
                "rename the box, delete it, or give --no-offsite"
            )
        setattr(found, kind, resource)
    return found


def plan(s3: Any, iam: Any, offsite: Offsite, name: str, found: FoundIam) -> list[str]:
    steps = []
    state = None if offsite.given else versioning(s3, offsite.bucket, offsite.account)
    if offsite.given:
        steps.append(f"use the given bucket {offsite.bucket} (unchanged)")
    elif state is None:
        steps.append(
            f"create bucket {offsite.bucket}: public access blocked, encrypted (SSE-S3), "
            f"versioned, old versions expire after {NONCURRENT_DAYS} days, boxes may add "
            "but not overwrite"
        )
    else:
        steps.append(f"use bucket {offsite.bucket}")
    if found.role is None:
        steps.append(
            f"create role {offsite.role}: read and add under {offsite.url(name)}/, delete "
            "only its locks/"
        )
    if found.profile is None:
        steps.append(f"create instance profile {offsite.role} with that role, for the instance")
    return steps


Made = Callable[..., None]  # Ledger.made


def ensure(s3: Any, iam: Any, offsite: Offsite, name: str, region: str,
           found: FoundIam, made: Made) -> str:  # fmt: skip
    """Bucket, role, role policy and instance profile; returns the profile's name. Each
    thing this run makes is handed to `made` with the call that removes it."""
    if offsite.given:
        if versioning(s3, offsite.bucket, offsite.account) != "Enabled":
            from odbox_common import console

            console.warn(
                f"bucket {offsite.bucket} is not versioned: the box's role may add objects, "
                "and an overwritten one would be lost (turn versioning on)"
            )
    else:
        _ensure_bucket(s3, offsite, region, made)
    role = found.role
    if role is None:
        aws.call(
            f"creating role {offsite.role}",
            iam.create_role,
            RoleName=offsite.role,
            AssumeRolePolicyDocument=json.dumps(TRUST),
            Description=f"Odoo Box {name}: its offsite backups under {offsite.url(name)}",
            Tags=aws.tags(name, offsite.role, {TAG_BUCKET: offsite.bucket}),
        )
        made(f"role {offsite.role}", lambda: delete_role(iam, offsite.role))
    elif aws.tag_dict(role).get(TAG_BUCKET) != offsite.bucket:  # another --backup-bucket
        aws.call(
            f"tagging role {offsite.role}",
            iam.tag_role,
            RoleName=offsite.role,
            Tags=[{"Key": TAG_BUCKET, "Value": offsite.bucket}],
        )
    document = box_policy(offsite.bucket, name, offsite.account)
    if _role_policy(iam, offsite.role) != document:
        aws.call(
            f"setting the policy of role {offsite.role}",
            iam.put_role_policy,
            RoleName=offsite.role,
            PolicyName=ROLE_POLICY,
            PolicyDocument=json.dumps(document),
        )
    profile = found.profile
    if profile is None:
        aws.call(
            f"creating instance profile {offsite.role}",
            iam.create_instance_profile,
            InstanceProfileName=offsite.role,
            Tags=aws.tags(name, offsite.role),
        )
        made(f"instance profile {offsite.role}", lambda: delete_profile(iam, offsite.role))
        profile = {"Roles": []}
    if offsite.role not in [r["RoleName"] for r in profile.get("Roles", [])]:
        aws.call(
            f"adding role {offsite.role} to its instance profile",
            iam.add_role_to_instance_profile,
            InstanceProfileName=offsite.role,
            RoleName=offsite.role,
        )
    return offsite.role


def _role_policy(iam: Any, role: str) -> dict[str, Any] | None:
    answer = aws.call_unless(
        f"reading the policy of role {role}",
        "NoSuchEntity",
        iam.get_role_policy,
        RoleName=role,
        PolicyName=ROLE_POLICY,
    )
    if answer is None:
        return None
    document = answer["PolicyDocument"]
    # boto3 decodes the URL-encoded JSON; some servers leave it a string
    return json.loads(document) if isinstance(document, str) else dict(document)


def _ensure_bucket(s3: Any, offsite: Offsite, region: str, made: Made) -> None:
    """Make the default bucket, or finish one a killed run made (the tags come last)."""
    bucket, owner = offsite.bucket, {"ExpectedBucketOwner": offsite.account}
    state = versioning(s3, bucket, offsite.account)
    if state is not None and tagged(s3, bucket, offsite.account):
        return
    if state is None:
        where = {} if region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": region}
        }  # fmt: skip
        aws.call(f"creating bucket {bucket}", s3.create_bucket, Bucket=bucket, **where)
        # DeleteBucket refuses a bucket holding anything: a box that wrote to it keeps it
        made(f"bucket {bucket}", lambda: s3.delete_bucket(Bucket=bucket, **owner))
    aws.call(
        f"blocking public access to {bucket}",
        s3.put_public_access_block,
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
        **owner,
    )
    aws.call(
        f"encrypting {bucket}",
        s3.put_bucket_encryption,
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
        **owner,
    )
    aws.call(
        f"versioning {bucket}",
        s3.put_bucket_versioning,
        Bucket=bucket,
        VersioningConfiguration={"Status": "Enabled"},
        **owner,
    )
    aws.call(
        f"setting the lifecycle of {bucket}",
        s3.put_bucket_lifecycle_configuration,
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "odbox-old-versions",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
                    "Expiration": {"ExpiredObjectDeleteMarker": True},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                }
            ]
        },
        **owner,
    )
    aws.call(
        f"setting the policy of {bucket}",
        s3.put_bucket_policy,
        Bucket=bucket,
        Policy=json.dumps(bucket_policy(bucket, offsite.account)),
        **owner,
    )
    aws.call(
        f"tagging {bucket}",
        s3.put_bucket_tagging,
        Bucket=bucket,
        Tagging={"TagSet": [{"Key": TAG_TOOL, "Value": TOOL}, {"Key": "Name", "Value": bucket}]},
        **owner,
    )


def _ignore_missing(fn: Callable[..., Any], **kwargs: Any) -> None:
    from botocore.exceptions import ClientError

    try:
        fn(**kwargs)
    except ClientError as e:
        if _code(e) != "NoSuchEntity":
            raise


def delete_profile(iam: Any, name: str) -> None:
    """The instance profile, after taking its role out (IAM refuses otherwise)."""
    _ignore_missing(iam.remove_role_from_instance_profile, InstanceProfileName=name, RoleName=name)
    _ignore_missing(iam.delete_instance_profile, InstanceProfileName=name)


def delete_role(iam: Any, name: str) -> None:
    _ignore_missing(iam.delete_role_policy, RoleName=name, PolicyName=ROLE_POLICY)
    _ignore_missing(iam.delete_role, RoleName=name)


def nix_lines(offsite_url: str, region: str) -> list[str]:
    """What to add to the node's configuration in the checkout to turn the copies on."""
    return [
        f'odbox.backup.offsite = {{ enable = true; repo = "{offsite_url}"; }};',
        "odbox.backup.identityFile = ...;  # copy reads the box's repository",
        f'systemd.services.odbox-backup-offsite.environment.AWS_DEFAULT_REGION = "{region}";',
    ]
