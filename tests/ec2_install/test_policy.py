"""The printed IAM policy, linted with parliament: no unknown action, resource or condition
key, and every action given the resource types IAM needs for it."""

from __future__ import annotations

import importlib.resources
import json
import re
import sys
import types
from typing import Any

import pytest

from ec2_install import policy
from tests.ec2_install.conftest import Aws

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # parliament's own regexes
KMS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _parliament() -> Any:
    # parliament 1.6 reads its data files with pkg_resources, which setuptools 82 (the
    # one pgadmin4 pins) no longer ships; resource_filename is all it calls.
    if "pkg_resources" not in sys.modules:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(  # type: ignore[attr-defined]
            importlib.resources.files(package).joinpath(name)
        )
        sys.modules["pkg_resources"] = shim
    import parliament

    return parliament


def _findings(document: dict[str, Any]) -> list[tuple[str, Any]]:
    parliament = _parliament()
    found = parliament.analyze_policy_string(json.dumps(document))
    return [(f.issue, f.detail) for f in found.findings]


def _per_action(document: dict[str, Any]) -> dict[str, Any]:
    """One statement per action with every resource its statements give it: IAM needs
    each resource type of a call allowed somewhere, not all in one statement."""
    resources: dict[str, set[str]] = {}
    for statement in document["Statement"]:
        actions = statement["Action"]
        listed = statement["Resource"]
        for action in [actions] if isinstance(actions, str) else actions:
            resources.setdefault(action, set()).update(
                [listed] if isinstance(listed, str) else listed
            )
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": action, "Resource": sorted(arns)}
        for action, arns in sorted(resources.items())
    ]}  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [{}, {"kms_key": KMS_KEY, "instance_types": ("m6g.xlarge", "t3.medium"),
          "ami_owners": ("427812963091",)}],
)  # fmt: skip
def test_parliament_finds_nothing_unknown_in_the_policy(options):
    document = policy.document(**options)
    findings = _findings(document)
    # Statements split by resource type (so each gets its own condition) are reported
    # one by one as missing the others; the union per action is checked below.
    assert [f for f in findings if f[0] != "RESOURCE_MISMATCH" and not _bucket_setup(f)] == []
    assert [f for f in _findings(_per_action(document)) if not _bucket_setup(f)] == []


def _bucket_setup(finding: tuple[str, Any]) -> bool:
    """parliament's note that setting the offsite bucket's policy or lifecycle could grant
    or expire what the policy does not allow on objects: `up` sets both once (the
    boxes' create-only rule, the expiry of what prune deleted). ec2-install runs as the
    admin, who prunes the offsite anyway; the box's own role has no such power."""
    issue, detail = finding
    return issue == "RESOURCE_POLICY_PRIVILEGE_ESCALATION" and bool(re.fullmatch(
        r"Possible resource policy privilege escalation on arn:aws:s3:::odbox-backups-\* due "
        r"to s3:\w+ not being allowed, but does allow "
        r"s3:(PutBucketPolicy|PutLifecycleConfiguration)", str(detail)))  # fmt: skip


def test_the_narrowing_options_are_in_the_printed_policy(aws: Aws):
    result = aws.run("policy", "--kms-key", KMS_KEY, "--instance-type", "m6g.xlarge",
                     "--ami-owner", "427812963091")  # fmt: skip
    assert result.returncode == 0, result.stderr
    statements = {s["Sid"]: s for s in json.loads(result.stdout)["Statement"]}
    launch = statements["LaunchInstanceTagged"]["Condition"]["StringEquals"]
    assert launch["ec2:InstanceType"] == ["m6g.xlarge"]
    assert statements["LaunchImage"]["Condition"] == {
        "StringEquals": {"ec2:Owner": ["427812963091"]}
    }
    kms = statements["EncryptVolumesWithKey"]
    assert kms["Resource"] == KMS_KEY and "kms:CreateGrant" in kms["Action"]
    assert kms["Condition"] == {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}
    aws.client("iam").create_policy(PolicyName="narrow", PolicyDocument=result.stdout)
    bad = aws.run("policy", "--kms-key", "my-key")
    assert bad.returncode == 2 and "give the key's ARN" in bad.stderr


def test_up_encrypts_both_volumes_with_the_kms_key(aws: Aws, ssh_pub):
    from tests.ec2_install.conftest import up_args

    key = aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    result = aws.run(*up_args(ssh_pub, "--kms-key", key))
    assert result.returncode == 0, result.stderr
    volumes = aws.client().describe_volumes()["Volumes"]
    assert len(volumes) == 2 and {v.get("KmsKeyId") for v in volumes} == {key}
