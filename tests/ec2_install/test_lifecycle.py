"""The IAM policy against the calls really made; progress on a terminal; Ctrl-C during `up`."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect

from ec2_install import policy
from tests.ec2_install.conftest import Aws, BoxSsh, backup_volume, up_args


def test_the_policy_names_exactly_the_calls_the_commands_make(
    aws: Aws, ssh_pub: Path, box_ssh: BoxSsh, checkout: Path
):
    ec2 = aws.client()
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
        "Subnets"
    ][0]
    runs = [
        ["amis"],
        up_args(ssh_pub, "--dry-run"),
        up_args(ssh_pub, "--subnet", subnet["SubnetId"]),
        [a if a != "203.0.113.7/32" else "198.51.100.0/24" for a in up_args(ssh_pub)],
        ["status", "--name", "shop", "--json"],
        ["down", "--name", "shop", "--dry-run"],
    ]
    for args in runs:
        result = aws.run(*args)
        assert result.returncode == 0, (args, result.stderr)
    aws.proxy.console = box_ssh.fingerprints()
    install = [a for a in up_args(ssh_pub) if a != "--no-install"]
    install[install.index("--flake") + 1] = str(checkout)
    result = aws.run(*install, env=box_ssh.env(aws))
    assert result.returncode == 0, result.stderr
    kept = backup_volume(aws)
    assert aws.run("down", "--name", "shop", "--yes").returncode == 0
    assert aws.run(*up_args(ssh_pub, "--backup-volume-id", kept)).returncode == 0
    delete = ["--delete-backup-volume", kept,
              "--delete-backup-bucket", "odbox-backups-123456789012-eu-west-1"]  # fmt: skip
    assert aws.run("down", "--name", "shop", "--yes", *delete).returncode == 0
    # EC2, IAM and S3 (named from its REST calls), with what a call needs besides its own
    # permission (iam:PassRole to launch with a profile, iam:TagRole to tag a new role)
    called = set(aws.proxy.permissions)
    assert called == policy.actions(), (
        f"called but not in the policy: {sorted(called - policy.actions())}; "
        f"in the policy but never called: {sorted(policy.actions() - called)}"
    )


def test_the_policy_is_a_valid_iam_document(aws: Aws):
    result = aws.run("policy")
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert document == policy.document()
    iam = aws.client("iam")
    iam.create_policy(PolicyName="ec2-install", PolicyDocument=result.stdout)  # moto validates it
    listed = {
        a
        for s in document["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert listed == policy.actions()
    # only reads are allowed on everything; a statement without a tag condition only
    # names what a launch, a new group or an association uses, never what they make
    unconditioned = set()
    for statement in document["Statement"]:
        action = statement["Action"]
        actions = [action] if isinstance(action, str) else action
        if statement["Resource"] == "*":
            assert all(a.startswith("ec2:Describe") for a in actions), statement
        elif "Condition" not in statement:
            unconditioned.add(statement["Sid"])
            made = ("instance/*", "volume/*", "elastic-ip/*")
            assert not any(r.endswith(made) for r in statement["Resource"]), statement
    assert unconditioned == {
        "LaunchImage",
        "LaunchFrom",
        "GroupInVpc",
        "AddressOnInterface",
        "RulesOfOwnGroup",
        # the offsite backups' role, profile and bucket: by their names, all odbox-…
        "BoxRole",
        "BoxInstanceProfile",
        "OffsiteBucket",
        "GivenBucket",
    }


def test_a_terminal_shows_each_phase_and_the_next_steps(aws: Aws, ssh_pub: Path):
    child = pexpect.spawn(
        sys.executable, ["-m", "ec2_install", *up_args(ssh_pub)], env=aws.env, cwd=str(aws.home),
        encoding="utf-8", timeout=120, dimensions=(40, 160),
    )  # fmt: skip
    seen = io.StringIO()
    child.logfile_read = seen
    for text in ("launch", "running", "status checks", "address", "box shop is up",
                 "ssh root@", "install: run the same `ec2-install up`"):  # fmt: skip
        child.expect_exact(text)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    # rich drew a finished mark and an elapsed time for each of the four phases
    assert seen.getvalue().count("✓") >= 4 and "0:00:0" in seen.getvalue()


def test_ctrl_c_during_up_removes_what_that_run_made(aws: Aws, ssh_pub: Path):
    aws.proxy.delays["DescribeInstanceStatus"] = 2.0
    process = subprocess.Popen(
        [sys.executable, "-m", "ec2_install", *up_args(ssh_pub)], env=aws.env, cwd=aws.home,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "DescribeInstanceStatus" not in aws.proxy.actions:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted during status checks; removed what this run made" in out
    assert err.strip().endswith("ec2-install: error: interrupted")
    ec2 = aws.client()
    running = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )
    assert running["Reservations"] == []
    assert ec2.describe_volumes()["Volumes"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [
        g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
    ] == []
