"""A shop in the emulated cluster: Odoo's deployment, its PVC, a Postgres pod, real data."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.backup.helpers import db_dsn, make_odoo, odoo_state
from tests.conftest import PostgresCluster
from tests.k8s_migrate.emulator import ExecCall, ExecRecord, K8sEmulator, Request
from tests.odoo_data import Shape

K8S_MIGRATE = Path(sys.executable).with_name("k8s-migrate")
ODBOX_BACKUP = Path(sys.executable).with_name("odbox-backup")
NS = "shop"
ANNOTATION = "k8s-migrate.odbox/replicas"
PULLING = "k8s-migrate.odbox/pulling"


def is_tar(call: ExecCall) -> bool:
    return "| tar -c" in " ".join(call.command)


def changes(requests: list[Request]) -> list[str]:
    """The requests that change something: not GET (exec included), not a dry run (plan
    and preflight create the helper pod with dryRun=All: admitted, validated, not stored)."""
    return [f"{r.method} {r.path}" for r in requests
            if r.method != "GET" and r.query.get("dryRun") != ["All"]]  # fmt: skip


def is_dump(call: ExecCall | ExecRecord) -> bool:
    """pg_dump's dump (in k8s-migrate's `sh -c` script that counts its bytes in the pod)."""
    return "pg_dump" in call.command and "--version" not in call.command


@dataclass
class Shop:
    """An Odoo in the emulated cluster: database `db` in the test PostgreSQL, files in the PVC."""

    k8s: K8sEmulator
    postgres: PostgresCluster
    db: str
    dsn: str
    filestore: Path
    env: dict[str, str]
    repo: Path
    tmp: Path

    def args(self, *extra: str) -> list[str]:
        return ["--namespace", NS, "--odoo-deployment", "odoo", "--db-pod", "postgres-0",
                "--db-container", "postgres", "--db-name", self.db, "--pvc", "odoo-data",
                "--context", "test", *extra]  # fmt: skip

    def migrate(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(K8S_MIGRATE), *args], capture_output=True, text=True,
                              env=self.env, timeout=300, **kwargs)  # fmt: skip

    def pull(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.migrate("pull", *self.args("--repo", str(self.repo), *extra))

    def pull_until(self, args: list[str], started: Path) -> subprocess.Popen[str]:
        """`pull ARGS` running in the background, once it has made `started` (a fake command
        in a pod touches it)."""
        child = subprocess.Popen([str(K8S_MIGRATE), "pull", *args], env=self.env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline and child.poll() is None, child.communicate()
            time.sleep(0.05)
        return child

    def snapshots(self) -> list[str]:
        folder = self.repo / "snapshots"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def restore(self, db: str, folder: Path) -> tuple[dict[str, str], dict[str, str]]:
        done = subprocess.run(
            [str(ODBOX_BACKUP), "restore", "latest", "--repo", str(self.repo), "--db", db,
             "--filestore", str(folder)],
            capture_output=True, text=True, env=self.env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return odoo_state(db_dsn(self.postgres, db), folder)

    def pg_env(self) -> dict[str, str]:
        return {k: v for k, v in self.postgres.env.items() if k.startswith("PG")}

    def add_db_pod(self, name: str, containers: list[str], annotations: dict[str, str]) -> None:
        """Another pod of the test PostgreSQL, with these containers and annotations."""
        self.k8s.add_pod(NS, name, {"app": "postgres"}, containers=containers,
                         env=self.pg_env(), image="postgres:15",
                         annotations=annotations)  # fmt: skip

    def add_fake_dump_pod(self, name: str, python: str) -> None:
        """A database pod whose `pg_dump` runs the Python code `python` instead (except
        `pg_dump --version`; its arguments in sys.argv[1:]); psql is the real one, against
        the test PostgreSQL."""
        bin_dir = self.tmp / f"bin-{name}"
        bin_dir.mkdir()
        real = shutil.which("pg_dump")
        assert real is not None
        (bin_dir / "pg_dump").write_text(
            "#!/bin/sh\n"
            f'for a; do [ "$a" = --version ] && exec {shlex.quote(real)} --version; done\n'
            f'exec {shlex.quote(sys.executable)} -c {shlex.quote(python)} "$@"\n'
        )
        (bin_dir / "pg_dump").chmod(0o755)
        env = {**self.pg_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        self.k8s.add_pod(NS, name, {"app": "postgres"}, containers=["postgres"], env=env,
                         image="postgres:15")  # fmt: skip

    def annotations(self) -> dict[str, str]:
        return dict(self.k8s.deployment(NS, "odoo")["metadata"].get("annotations") or {})

    def helpers_left(self) -> list[str]:
        return [p["metadata"]["name"] for p in self.k8s.pods(NS)
                if p["metadata"]["name"].startswith("k8s-migrate-")]  # fmt: skip

    def assert_put_back(self, replicas: int = 2) -> None:
        """The helper pod is gone and Odoo is at `replicas` again."""
        deadline = time.monotonic() + 10
        while self.helpers_left() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.helpers_left() == []
        assert self.k8s.replicas(NS, "odoo") == replicas


@pytest.fixture
def shop(k8s: K8sEmulator, postgres: PostgresCluster, tmp_path: Path, request: Any) -> Any:
    db = f"k8s_{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]}"  # noqa: S324
    pvc = tmp_path / "pvc"
    filestore = pvc / "filestore" / db
    dsn = make_odoo(postgres, db, filestore, Shape.small(), seed=11)
    # Binary safety: a file and a row with every byte value.
    every_byte = bytes(range(256)) * 1024
    name = hashlib.sha1(every_byte).hexdigest()  # noqa: S324 (Odoo's file names)
    (filestore / name[:2]).mkdir(exist_ok=True)
    (filestore / name[:2] / name).write_bytes(every_byte)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE every_byte (id int PRIMARY KEY, data bytea)")
        conn.execute("INSERT INTO every_byte VALUES (1, %s)", (every_byte,))
    k8s.add_namespace(NS)
    k8s.add_pvc(NS, "odoo-data", pvc)
    k8s.add_deployment(NS, "odoo", {"app": "odoo"}, replicas=2)
    pg_env = {k: v for k, v in postgres.env.items() if k.startswith("PG")}
    k8s.add_pod(NS, "postgres-0", {"app": "postgres"}, containers=["postgres"], env=pg_env,
                image="postgres:15")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "ODBOX_", "KUBE"))}
    env |= {**pg_env, "KUBECONFIG": str(k8s.kubeconfig), "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "TMPDIR": str(tmp_path / "tmp")}  # fmt: skip
    # odbox-backup's authentication key, as the box's configuration gives it (`init` writes it)
    env["ODBOX_BACKUP_AUTH_KEY_FILE"] = str(tmp_path / "backup-auth.key")
    (tmp_path / "tmp").mkdir()
    repo = tmp_path / "repo"
    subprocess.run([str(ODBOX_BACKUP), "init", "--repo", str(repo)], env=env, check=True,
                   capture_output=True)  # fmt: skip
    yield Shop(k8s, postgres, db, dsn, filestore, env, repo, tmp_path)
    for made in postgres.psql(
        f"SELECT datname FROM pg_database WHERE datname LIKE '{db}%'"
    ).split():
        postgres.psql(f'DROP DATABASE IF EXISTS "{made}" WITH (FORCE)')
