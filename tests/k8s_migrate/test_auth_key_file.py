"""`k8s-migrate pull --repo` takes the repository's authentication key by `--auth-key-file`,
as odbox-backup's commands do, not only from ODBOX_BACKUP_AUTH_KEY_FILE."""

from __future__ import annotations

import subprocess

from tests.helpers import one_error_line
from tests.k8s_migrate.shop import K8S_MIGRATE, Shop


def test_pull_into_a_repository_takes_the_key_by_option(shop: Shop) -> None:
    key = shop.env["ODBOX_BACKUP_AUTH_KEY_FILE"]  # the one the fixture's `init` wrote
    env = {k: v for k, v in shop.env.items() if k != "ODBOX_BACKUP_AUTH_KEY_FILE"}
    args = ["pull", *shop.args("--repo", str(shop.repo))]
    refused = subprocess.run([str(K8S_MIGRATE), *args], env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert refused.returncode == 2 and "--auth-key-file" in one_error_line(refused)
    assert shop.snapshots() == []
    done = subprocess.run([str(K8S_MIGRATE), *args, "--auth-key-file", key], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(shop.snapshots()) == 1
