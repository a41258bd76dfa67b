"""The shared PostgreSQL fixture: a real server, Unix socket only, never as root, cleaned up."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import start_postgres_cluster


def test_cluster_accepts_connections_on_its_unix_socket_only(postgres):
    assert postgres.psql("select 1") == "1"
    assert postgres.psql("show listen_addresses") == ""
    assert postgres.psql("show unix_socket_directories") == str(postgres.socket_dir)
    assert int(postgres.psql("show server_version_num")) >= 150000
    assert postgres.psql("show server_encoding") == "UTF8"


def test_server_does_not_run_as_root(postgres):
    pid = int((postgres.datadir / "postmaster.pid").read_text().split()[0])
    assert Path(f"/proc/{pid}").stat().st_uid != 0


def test_a_second_cluster_is_independent_and_removed_afterwards(postgres):
    with start_postgres_cluster(port=5433) as other:
        other.psql("create database only_here")
        assert other.psql("select count(*) from pg_database where datname='only_here'") == "1"
        assert postgres.psql("select count(*) from pg_database where datname='only_here'") == "0"
        base = other.datadir.parent
    assert not base.exists()
    result = subprocess.run(
        [other.bindir / "psql", "-X", "-c", "select 1"], env=other.env, capture_output=True
    )
    assert result.returncode != 0
