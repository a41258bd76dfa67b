"""Images and bad input: each refusal is one clear line, a non-zero exit, and nothing made."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ec2_install import spec
from odbox_common.errors import UsageError
from tests.ec2_install.conftest import Aws, up_args


def _launched(aws: Aws) -> list[str]:
    return [a for a in aws.proxy.actions if a == "RunInstances"]


@pytest.mark.parametrize(
    ("instance_type", "image"),
    [("m6g.xlarge", "nixos/25.05.813814.9e7a3a27bbf3-aarch64-linux"),
     ("t3.medium", "nixos/25.05.802216.b3582c75c7f2-x86_64-linux")],
)  # fmt: skip
def test_up_picks_the_newest_stable_official_image_of_the_architecture(
    aws: Aws, ssh_pub, instance_type, image
):
    args = up_args(ssh_pub)
    args[args.index("m6g.xlarge")] = instance_type
    result = aws.run(*args)
    assert result.returncode == 0, result.stderr
    assert image in result.stdout
    # not the impostor's newer nixos/26.05, not the pending build, not the 25.11 pre-release,
    # not the 24.11 rebuild that is newer by date
    node = "ec2-aarch64" if "aarch64" in image else "ec2-x86_64"
    plan = aws.run(*[a for a in args if a != "--no-install"], "--dry-run", "--age-key", ssh_pub)
    assert f"--flake github:acme/odoo-box#{node} --target-host" in plan.stdout, plan.stderr


def test_amis_lists_only_the_official_images_newest_release_first(aws: Aws):
    result = aws.run("amis", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["schema"], document["region"]) == (1, "eu-west-1")
    images = document["images"]
    assert {i["name"].split(".")[0] for i in images} <= {"nixos/24", "nixos/25"}
    x86 = [i["name"] for i in images if i["architecture"] == "x86_64"]
    assert x86 == [
        "nixos/25.11pre842001.1f9a3ebc2b3e-x86_64-linux",
        "nixos/25.05.802216.b3582c75c7f2-x86_64-linux",
        "nixos/24.11.719113.50ab793786d9-x86_64-linux",
        "nixos/24.11.713719.4e96537f163f-x86_64-linux",
        "nixos/24.05.7376.b134951a4c9f-x86_64-linux",
    ]
    assert next(i for i in images if i["architecture"] == "x86_64")["prerelease"] is True
    table = aws.run("amis", "--arch", "aarch64")
    assert (
        table.returncode == 0
        and "nixos/25.05.813814" in table.stdout
        and "x86_64" not in table.stdout.split("\n", 1)[1]
    )


def test_an_explicit_ami_of_the_wrong_architecture_is_refused(aws: Aws, ssh_pub: Path):
    x86_image = aws.client().describe_images(
        Owners=["427812963091"], Filters=[{"Name": "architecture", "Values": ["x86_64"]}]
    )["Images"][0]["ImageId"]
    result = aws.run(*up_args(ssh_pub, "--ami", x86_image))
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        f"--ami {x86_image} is built for x86_64, but m6g.xlarge runs arm64"
    )
    assert aws.proxy.mutating() == []
    missing = aws.run(*up_args(ssh_pub, "--ami", "ami-0123456789abcdef0"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_an_explicit_ami_must_be_nixos_and_another_owner_is_warned_of(aws: Aws, ssh_pub: Path):
    ec2 = aws.client()
    ubuntu = ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
    result = aws.run(*up_args(ssh_pub, "--ami", ubuntu))
    assert result.returncode == 2 and "is not a NixOS image" in result.stderr
    impostor = ec2.describe_images(
        Owners=["111122223333"], Filters=[{"Name": "architecture", "Values": ["arm64"]}]
    )["Images"][0]["ImageId"]
    result = aws.run(*up_args(ssh_pub, "--ami", impostor))
    assert result.returncode == 0, result.stderr
    assert "is not an official NixOS image (owner 111122223333, not 427812963091)" in result.stderr
    assert "nixos/26.05.900001" in result.stdout


@pytest.mark.parametrize(
    ("options", "exit_code", "message"),
    [
        ({"--region": "xx-nowhere-1"}, 2, "unknown region 'xx-nowhere-1'"),
        ({"--instance-type": "m6g.huge"}, 2, "unknown instance type 'm6g.huge'"),
        ({"--instance-type": "mac2.metal"}, 2, "no official NixOS image for arm64_mac"),
        ({"--root-gb": "20000"}, 2, "over gp3's largest volume (16384 GiB)"),
        ({"--node": "ec2-aarch64-boot"}, 2, "without -boot"),
        ({"--flake": "https://github.com/acme/odoo-box.git"}, 2, "give github:acme/odoo-box"),
        ({"--flake": "/srv/odoo-box"}, 2, "--flake /srv/odoo-box: no flake.nix there"),
        ({"--ssh-cidr": "0.0.0.0/0"}, 2, "opens SSH to the whole internet"),
        ({"--ssh-cidr": "203.0.113.7"}, 0, None),  # one address is a /32
        ({"--ssh-cidr": "203.0.113.7/24"}, 2, "bad --ssh-cidr '203.0.113.7/24'"),
        ({"--name": "Shop_1"}, 2, "bad box name 'Shop_1'"),
        ({"--root-gb": "10"}, 2, "--root-gb 10 is too small"),
        ({"--root-gb": "30", "--backup-gb": "30"}, 2, "must differ"),
        ({"--flake": "github:acme/odoo-box#ec2-x86_64"}, 2, "without the #attribute"),
        ({"--flake": "path:/home/me/odoo-box"}, 2, "no flake.nix there"),
        ({"--subnet": "subnet-0123456789abcdef0"}, 2, "does not exist in eu-west-1"),
        ({"--ssh-cidr": "2001:db8::/64"}, 2, "is IPv6, but the box gets no IPv6 address"),
        ({"--flake": "github:acme/odoo-box?dir=" + "x" * 17000}, 2,
         "--flake is 17025 characters long"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(aws: Aws, ssh_pub: Path, options, exit_code, message):
    args = up_args(ssh_pub)
    for option, value in options.items():
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    result = aws.run(*args)
    assert result.returncode == exit_code, result.stderr
    if message is None:
        return
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert aws.proxy.mutating() == []


def test_a_missing_or_malformed_ssh_key_is_refused(aws: Aws, ssh_pub: Path, tmp_path: Path):
    cases = {
        tmp_path / "nope.pub": "no SSH public key at",
        ssh_pub.with_suffix(""): "is a private key: give the public one",
    }
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-ed25519 AAAAnot-base64!! me@laptop\n")
    cases[bad] = "is malformed"
    ecdsa = tmp_path / "ecdsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", ecdsa], check=True)
    cases[ecdsa.with_suffix(".pub")] = "EC2 imports only those two kinds"
    two = tmp_path / "two.pub"
    two.write_text(ssh_pub.read_text() * 2)
    cases[two] = "must be one OpenSSH public key line, not 2"
    for path, message in cases.items():
        result = aws.run(*up_args(path))
        assert result.returncode == 2, (path, result.stderr)
        assert message in result.stderr, (path, result.stderr)
    neither = aws.run(
        "up", "--instance-type", "t3.medium", "--ssh-cidr", "10.0.0.0/8", "--flake", "github:a/b"
    )
    assert neither.returncode == 2 and "give one of --ssh-key PUB" in neither.stderr
    assert aws.proxy.actions == []  # refused before any AWS call


def test_a_key_pair_of_the_same_name_with_another_key_is_refused(
    aws: Aws, ssh_pub: Path, tmp_path: Path
):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    aws.client().import_key_pair(
        KeyName="odbox-shop", PublicKeyMaterial=other.with_suffix(".pub").read_bytes()
    )
    result = aws.run(*up_args(ssh_pub))
    assert (
        result.returncode == 2
        and "exists with another key: give --key-name odbox-shop" in result.stderr
    )
    assert _launched(aws) == []
    # with --key-name the existing pair is used as it is, and `down` leaves it
    args = up_args(ssh_pub)
    args[args.index("--ssh-key") : args.index("--ssh-key") + 2] = ["--key-name", "odbox-shop"]
    assert aws.run(*args).returncode == 0
    assert aws.run("down", "--name", "shop", "--yes").returncode == 0
    assert [k["KeyName"] for k in aws.client().describe_key_pairs()["KeyPairs"]] == ["odbox-shop"]
    missing = aws.run(*[a if a != "odbox-shop" else "no-such-key" for a in args])
    assert missing.returncode == 2 and "--key-name no-such-key: no such key pair" in missing.stderr


def test_no_credentials_is_one_clear_line(aws: Aws, ssh_pub: Path):
    env = {
        k: v for k, v in aws.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    for args in (up_args(ssh_pub), ["status"], ["amis"], ["down", "--name", "shop", "--yes"]):
        result = aws.run(*args, env=env)
        assert result.returncode == 1, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert "ec2-install: error: no AWS credentials: set AWS_PROFILE" in line, line
    assert aws.proxy.actions == []


def test_rejected_credentials_are_one_clear_line(aws: Aws):
    aws.proxy.fail(
        "DescribeImages",
        "AuthFailure",
        "AWS was not able to validate the provided access credentials",
        status=401,
    )
    result = aws.run("amis")
    assert result.returncode == 1
    assert (
        "AuthFailure: AWS was not able to validate" in result.stderr
        and "(check the AWS credentials)" in result.stderr
    )


def test_no_region_is_a_usage_error(aws: Aws):
    env = {k: v for k, v in aws.env.items() if k not in ("AWS_DEFAULT_REGION", "AWS_REGION")}
    result = aws.run("amis", env=env)
    assert result.returncode == 2 and "no region: give --region" in result.stderr


def test_flake_defaults_to_the_checkout_around_the_working_directory(tmp_path: Path):
    repo = tmp_path / "odoo-box"
    (repo / "nix").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", repo], check=True)
    assert spec.checkout(repo / "nix") is None  # no flake.nix at its top
    (repo / "flake.nix").write_text("{ }\n")
    assert spec.checkout(repo / "nix") == str(repo.resolve())
    assert spec.checkout(tmp_path) is None  # not a git checkout
    assert spec.check_flake(str(repo / "nix" / "..")) == str(repo.resolve())


def test_up_without_flake_outside_a_checkout_says_what_to_give(aws: Aws, ssh_pub: Path):
    args = up_args(ssh_pub)
    del args[args.index("--flake") : args.index("--flake") + 2]
    result = aws.run(*args)
    assert result.returncode == 2 and "give --flake" in result.stderr


def test_up_without_the_vault_identity_says_what_to_do(aws: Aws, ssh_pub: Path, tmp_path: Path):
    repo = tmp_path / "odoo-box"
    repo.mkdir()
    (repo / "flake.nix").write_text("{ }\n")
    args = [a for a in up_args(ssh_pub) if a != "--no-install"]
    args[args.index("--flake") + 1] = str(repo)
    result = aws.run(*args)
    assert result.returncode == 2
    assert f"no age identity at {repo}/vault/age.key: run `vaultgen generate`" in result.stderr
    assert aws.proxy.actions == []


def test_the_ssh_key_fingerprint_matches_ssh_keygen(ssh_pub: Path):
    key = spec.SshKey.read(ssh_pub)
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", ssh_pub], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert out.split()[1] == key.fingerprint
    with pytest.raises(UsageError):
        spec.SshKey.parse("ssh-dss AAAAB3NzaC1kc3MAAACBAP")


def test_an_unknown_profile_is_a_usage_error(aws: Aws):
    result = aws.run("amis", env={**aws.env, "AWS_PROFILE": "nosuchprofile"})
    assert result.returncode == 2
    assert "nosuchprofile" in result.stderr and "aws configure list-profiles" in result.stderr


SECRET = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"


@pytest.mark.parametrize(
    "flake",
    [f"git+https://x-access-token:{SECRET}@github.com/acme/odoo-box",
     f"git+https://{SECRET}@github.com/acme/odoo-box",
     f"git+https://gitlab.example.com/ops/box?private_token={SECRET}",
     f"git+https://git.example.com/ops/box?ref=main&token={SECRET}",
     f"github:acme/odoo-box?access_token={SECRET}",
     f"git+ssh://git:{SECRET}@git.example.com/ops/box"],
)  # fmt: skip
def test_a_flake_url_carrying_a_credential_is_refused_without_repeating_it(
    aws: Aws, ssh_pub: Path, flake: str
):
    args = up_args(ssh_pub)
    args[args.index("--flake") + 1] = flake
    for extra in ([], ["--dry-run"]):
        result = aws.run(*args, *extra)
        assert result.returncode == 2, result.stderr
        assert "carries a credential" in result.stderr
        assert SECRET not in result.stderr + result.stdout
    assert aws.proxy.actions == []


def test_a_plain_ssh_or_https_flake_is_no_credential():
    for flake in ("git+ssh://git@github.com/acme/odoo-box", "github:acme/odoo-box?ref=main",
                  "git+https://git.example.com/ops/box?ref=v1&dir=nix"):  # fmt: skip
        assert spec.check_flake(flake) == flake


def test_dry_run_with_a_key_name_that_does_not_exist_is_refused(aws: Aws, ssh_pub: Path):
    args = up_args(ssh_pub, "--dry-run")
    args[args.index("--ssh-key") : args.index("--ssh-key") + 2] = ["--key-name", "nosuch"]
    result = aws.run(*args)
    assert result.returncode == 2, result.stdout
    assert "--key-name nosuch: no such key pair in eu-west-1" in result.stderr
    assert aws.proxy.mutating() == []


def test_aws_region_alone_chooses_the_region(aws: Aws):
    env = {k: v for k, v in aws.env.items() if k != "AWS_DEFAULT_REGION"}
    result = aws.run("amis", "--json", env={**env, "AWS_REGION": "eu-west-1"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)


def test_several_ssh_cidrs_each_get_port_22(aws: Aws, ssh_pub: Path):
    result = aws.run(*up_args(ssh_pub, "--ssh-cidr", "198.51.100.0/24", "--ssh-cidr", "192.0.2.9"))
    assert result.returncode == 0, result.stderr
    status = json.loads(aws.run("status", "--name", "shop", "--json").stdout)
    ssh = {r["cidr"] for r in status["security_group"]["ingress"] if r["from_port"] == 22}
    assert ssh == {"203.0.113.7/32", "198.51.100.0/24", "192.0.2.9/32"}


@pytest.mark.parametrize("vpc_option, subnet_option", [("--vpc", "--subnet"),
                                                      ("--vpc-id", "--subnet-id")])  # fmt: skip
def test_vpc_puts_the_group_and_the_instance_in_that_vpc(
    aws: Aws, ssh_pub: Path, vpc_option: str, subnet_option: str
):
    """The issue's and the AWS CLI's names (--subnet, --vpc), and the older -id ones."""
    ec2 = aws.client()
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24",
                               AvailabilityZone="eu-west-1b")["Subnet"]["SubnetId"]  # fmt: skip
    result = aws.run(*up_args(ssh_pub, vpc_option, vpc))
    assert result.returncode == 0, result.stderr
    named = [{"Name": "group-name", "Values": ["odbox-shop"]}]
    [group] = ec2.describe_security_groups(Filters=named)["SecurityGroups"]
    assert group["VpcId"] == vpc
    reservations = ec2.describe_instances(Filters=[{"Name": "tag:odbox:box", "Values": ["shop"]}])
    [instance] = [i for r in reservations["Reservations"] for i in r["Instances"]]
    assert instance["SubnetId"] == subnet
    other = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
    mismatch = aws.run(*up_args(ssh_pub, vpc_option, vpc, subnet_option,
                                other["Subnets"][0]["SubnetId"], name="stage"))  # fmt: skip
    assert mismatch.returncode == 2 and f"not --vpc {vpc}" in mismatch.stderr
