"""Every ```sh example of tools/dbinit/README.md runs, in order, against a fresh cluster."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import start_postgres_cluster
from tests.dbinit.helpers import DBINIT, clean_env, dbinit
from tests.helpers import run_sh_examples

README = Path(__file__).resolve().parents[2] / "tools/dbinit/README.md"


def test_every_example_in_the_readme_runs(tmp_path):
    with start_postgres_cluster() as cluster:
        env = clean_env(
            PATH=f"{DBINIT.parent}{os.pathsep}{cluster.bindir}{os.pathsep}{os.environ['PATH']}",
            PGHOST=str(cluster.socket_dir), PGPORT=str(cluster.port), PGUSER="postgres",
        )  # fmt: skip
        everything = "\n".join(run_sh_examples(README, tmp_path, env, at_least=5))
        assert "refused with exit 2" in everything
        assert "check found drift: exit 3" in everything
        assert "as they should be" in everything
        assert "already points at" in everything
        assert "PUBLIC can run connection_params() in database pgadmin" in everything
        assert "function public.run_sql(text) in database odoo runs as superuser" in everything
        assert "no drift after setup" in everything
        assert dbinit(cluster, "check").returncode == 0
