"""Append-only offsite: the box's credentials add to the bucket and never delete or overwrite.

moto in server mode with IAM enforced (its own server: auth is global to one): an admin
user with every right, and a box user with exactly the policy tools/backup/README.md
gives ("Append-only offsite"). moto checks actions and resources of identity policies,
not bucket policies or the `s3:if-none-match` condition (tests/backup/README.md), so
"never overwrites" is checked on the bucket itself: versioning on, every key the box
wrote has one version and no delete marker.
"""

from __future__ import annotations

import hashlib
import json
import random
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from tests.backup.helpers import backup, backup_ok, backup_run, env_for
from tests.conftest import PostgresCluster, running_moto
from tests.helpers import one_error_line
from tests.odoo_data import store_file

BUCKET = "acme-offsite"
PREFIX = "box1"
REPO = f"s3://{BUCKET}/{PREFIX}"


def box_policy(bucket: str, prefix: str) -> dict[str, Any]:
    """The box's identity policy, as the README gives it."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "List", "Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": f"arn:aws:s3:::{bucket}"},
            {"Sid": "ReadAndAdd", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
             "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*"},
            {"Sid": "OwnLocks", "Effect": "Allow", "Action": "s3:DeleteObject",
             "Resource": f"arn:aws:s3:::{bucket}/{prefix}/locks/*"},
        ],
    }  # fmt: skip


@dataclass(frozen=True)
class AuthMoto:
    endpoint: str
    admin: tuple[str, str]
    box: tuple[str, str]

    def env(self, who: tuple[str, str], base: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
        env.update(AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID=who[0],
                   AWS_SECRET_ACCESS_KEY=who[1], AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
        return env

    def client(self, who: tuple[str, str]) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=who[0], aws_secret_access_key=who[1])  # fmt: skip


@pytest.fixture(scope="module")
def auth_moto() -> Iterator[AuthMoto]:
    """Its own moto server (auth is global to a server), IAM enforced once the users exist."""
    with running_moto() as server:
        iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")  # fmt: skip
        keys = {}
        allow_all = [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
        everything = {"Version": "2012-10-17", "Statement": allow_all}
        for user, policy in (("admin", everything), ("box", box_policy(BUCKET, PREFIX))):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        # From now on every request is checked against its user's policies.
        reset = f"{server.endpoint}/moto-api/reset-auth"
        request = urllib.request.Request(reset, data=b"0", method="POST",  # noqa: S310 (loopback)
                                         headers={"Content-Type": "text/plain"})  # fmt: skip
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310
        moto = AuthMoto(server.endpoint, keys["admin"], keys["box"])
        admin = moto.client(moto.admin)
        admin.create_bucket(Bucket=BUCKET)
        admin.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield moto


def _versions(moto: AuthMoto) -> tuple[dict[str, int], list[str]]:
    """Key → how many versions it has, and the keys with a delete marker."""
    admin = moto.client(moto.admin)
    counts: dict[str, int] = {}
    markers: list[str] = []
    for page in admin.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        for version in page.get("Versions", []):
            counts[version["Key"]] = counts.get(version["Key"], 0) + 1
        markers += [m["Key"] for m in page.get("DeleteMarkers", [])]
    return counts, markers


def test_the_box_runs_and_copies_into_an_append_only_bucket_and_cannot_prune_it(
    auth_moto: AuthMoto, postgres: PostgresCluster, odoo, tmp_path
):
    base = env_for(postgres, None)
    admin_env, box_env = auth_moto.env(auth_moto.admin, base), auth_moto.env(auth_moto.box, base)
    box = auth_moto.client(auth_moto.box)
    with pytest.raises(Exception, match="AccessDenied"):  # IAM is enforced
        box.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/config.json")
    backup_ok(admin_env, "init", "--repo", REPO)  # the admin makes the offsite repository
    local = str(tmp_path / "local")
    backup_ok(box_env, "init", "--repo", local)

    backup_run(box_env, local, odoo)
    backup_ok(box_env, "copy", "--repo", local, "all", "--to", REPO)
    store_file(odoo[2], random.Random(8).randbytes(2 << 20))  # stored alone
    store_file(odoo[2], random.Random(9).randbytes(30_000))  # in a pack
    backup_run(box_env, local, odoo)
    # A file the box will store next, planted alone without an index (a killed run's, or an
    # attacker's): the box may not overwrite it, so it stores that content in a pack.
    planted = random.Random(10).randbytes(1_500_000)
    store_file(odoo[2], planted)
    name = hashlib.sha256(planted).hexdigest()
    auth_moto.client(auth_moto.admin).put_object(
        Bucket=BUCKET, Key=f"{PREFIX}/objects/{name[:2]}/{name}", Body=b"not its content"
    )
    backup_run(box_env, local, odoo)
    out = backup_ok(box_env, "copy", "--repo", local, "all", "--to", REPO)
    assert out.count("copied snapshot") == 2 and "already in" in out
    backup_run(box_env, REPO, odoo)  # a run straight into the bucket works too

    counts, markers = _versions(auth_moto)
    written = {k: n for k, n in counts.items() if not k.startswith(f"{PREFIX}/locks/")}
    assert written and all(n == 1 for n in written.values()), {k: n for k, n in written.items()
                                                               if n > 1}  # fmt: skip
    assert not [m for m in markers if not m.startswith(f"{PREFIX}/locks/")]
    assert not list(
        box.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/locks/").get("Contents", [])
    )

    code, report = _verify(admin_env)
    assert code == 0 and len(report["snapshots"]) == 4, report["problems"]

    before = _versions(auth_moto)
    result = backup(box_env, "prune", "--repo", REPO, "--keep-last", "1")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "may not delete" in line and "admin's machine" in line and "nothing was changed" in line
    assert _versions(auth_moto)[0].keys() - before[0].keys() <= {
        k for k in _versions(auth_moto)[0] if k.startswith(f"{PREFIX}/locks/")
    }
    assert backup(box_env, "prune", "--repo", REPO, "--keep-last", "1", "--dry-run").returncode == 0

    planted_key = f"{PREFIX}/objects/{name[:2]}/{name}"
    assert _versions(auth_moto)[0][planted_key] == 1  # the box wrote around it, not over it
    out = backup_ok(admin_env, "prune", "--repo", REPO, "--keep-last", "1")
    assert "forgot 3 of 4 snapshots" in out
    assert not _exists(auth_moto, planted_key)  # its content is in a pack: prune drops it
    code, report = _verify(admin_env, "--read-data")
    assert code == 0 and len(report["snapshots"]) == 1, report["problems"]


def _verify(env: dict[str, str], *extra: str) -> tuple[int, dict[str, Any]]:
    result = backup(env, "verify", "--repo", REPO, "--json", *extra)
    assert result.returncode in (0, 3), result.stderr
    return result.returncode, json.loads(result.stdout)


def _exists(moto: AuthMoto, key: str) -> bool:
    try:
        moto.client(moto.admin).head_object(Bucket=BUCKET, Key=key)
    except Exception:
        return False
    return True
