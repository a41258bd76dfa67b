"""On a box set up by dbinit: the restored database is odoo's and `dbinit check` finds no drift."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.backup.helpers import backup_ok, db_dsn, env_for, odoo_state
from tests.conftest import PostgresCluster, start_postgres_cluster
from tests.dbinit.helpers import dbinit, dbinit_ok
from tests.odoo_data import Shape, create_schema, fill


@pytest.fixture(scope="module")
def box() -> Iterator[PostgresCluster]:
    with start_postgres_cluster() as cluster:
        dbinit_ok(cluster, "setup")
        yield cluster


def test_restore_on_a_dbinit_box_keeps_owner_and_grants(box, tmp_path):
    filestore = tmp_path / "filestore" / "odoo"
    with psycopg.connect(db_dsn(box, "odoo"), options="-c role=odoo") as conn:
        create_schema(conn)  # as Odoo makes them: owned by odoo
        fill(conn, filestore, Shape.small(), seed=2)
    dbinit_ok(box, "check")
    env = env_for(box, None)
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_ok(env, "run", "--repo", repo, "--db", "odoo", "--filestore", str(filestore))
    at_backup = odoo_state(db_dsn(box, "odoo"), filestore)

    backup_ok(env, "restore", "--repo", repo, "latest", "--db", "odoo",
              "--filestore", str(filestore))  # fmt: skip
    assert odoo_state(db_dsn(box, "odoo"), filestore) == at_backup
    owners = box.psql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'",
                      db="odoo")  # fmt: skip
    assert owners == "odoo"
    check = dbinit(box, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    backup_ok(env, "drop-previous", "--db", "odoo", "--filestore", str(filestore))
    dbinit_ok(box, "check")
