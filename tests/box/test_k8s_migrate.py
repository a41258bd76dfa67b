"""The migration path end to end with a real Odoo: k8s-migrate pulls a real Odoo database
and its filestore out of the emulated cluster (tests/k8s_migrate: a DB pod running pg_dump
against PostgreSQL, a PVC that is a local folder); a new box in bootstrap mode restores it
and serves it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.box import data
from tests.box.harness import DB
from tests.box.helpers import (
    assert_dbinit_content,
    become_a_new_box_in_bootstrap_mode,
    ok,
    switch_to_the_full_configuration,
    what_odoo_serves,
)
from tests.k8s_migrate.emulator import K8sEmulator

pytestmark = pytest.mark.odoo

NS = "shop"
SOURCE = "shop"  # the database's name in the cluster


def test_a_real_odoo_pulled_out_of_kubernetes_is_restored_on_a_new_box_and_served(box, tmp_path):
    box.start(workers=0)
    data.make_shop(box)
    before = what_odoo_serves(box)
    box.stop()
    # The shop in the cluster: the same database under its own name, its filestore in a PVC.
    box.sql(f"CREATE DATABASE {SOURCE} TEMPLATE {DB} OWNER odoo")
    pvc = tmp_path / "pvc"
    (pvc / "filestore").mkdir(parents=True)
    shutil.copytree(box.filestore, pvc / "filestore" / SOURCE)
    repo = tmp_path / "repo"
    ok(box.odbox_backup(repo, "init"))
    pg_env = {"PGHOST": str(box.cluster.socket_dir), "PGPORT": str(box.cluster.port),
              "PGUSER": "postgres"}  # fmt: skip
    with K8sEmulator() as k8s:
        k8s.add_namespace(NS)
        k8s.add_pvc(NS, "odoo-data", pvc)
        k8s.add_deployment(NS, "odoo", {"app": "odoo"}, replicas=1)
        k8s.add_pod(NS, "postgres-0", {"app": "postgres"}, containers=["postgres"], env=pg_env,
                    image="postgres:15")  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "ODBOX_", "KUBE"))}
        env |= {
            "KUBECONFIG": str(k8s.kubeconfig),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "ODBOX_BACKUP_AUTH_KEY_FILE": str(repo.parent / "backup-auth.key"),
        }  # box's
        pulled = subprocess.run(
            [str(Path(sys.executable).with_name("k8s-migrate")), "pull", "--namespace", NS,
             "--db-pod", "postgres-0", "--db-name", SOURCE, "--pvc", "odoo-data",
             "--context", "test", "--repo", str(repo)],
            capture_output=True, text=True, env=env, timeout=900,
        )  # fmt: skip
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    box.sql(f"DROP DATABASE {SOURCE}")

    become_a_new_box_in_bootstrap_mode(box)
    ok(box.odbox_backup(repo, "restore", "latest", odoo_service=False))
    switch_to_the_full_configuration(box)
    assert what_odoo_serves(box) == before
    assert_dbinit_content(box)
