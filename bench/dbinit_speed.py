"""dbinit on a throwaway cluster with nothing to change, side by side with psql and pg_isready.

Goal (issue 3): `dbinit setup` with nothing to change under 0.5 s median,
process start included: it runs on every boot as the postgresql unit's
post-start step. The baselines are the floor any tool pays: `psql -c 'SELECT 1'`
(the seed ran its SQL through psql) and `pg_isready` (the seed's `pgtest`).

    uv run python bench/dbinit_speed.py --runs 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_postgres_cluster

from timing import BIN, compile_sources, report, round_robin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each command (default 30)")
    parser.add_argument("--tables", type=int, default=1000,
                        help="tables in the Odoo database (a real Odoo has ~1000)")  # fmt: skip
    args = parser.parse_args()

    compile_sources()
    with start_postgres_cluster() as cluster:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ODBOX_", "PG"))}
        env.update(PGHOST=str(cluster.socket_dir), PGPORT=str(cluster.port), PGUSER="postgres")
        dbinit = str(BIN / "dbinit")
        subprocess.run([dbinit, "setup"], env=env, check=True, stdout=subprocess.DEVNULL)
        tables = "".join(
            f"CREATE TABLE t{i} (id serial PRIMARY KEY, name text);" for i in range(args.tables)
        )
        cluster.psql(f"SET ROLE odoo; {tables}", db="odoo")
        subprocess.run([dbinit, "setup"], env=env, check=True, stdout=subprocess.DEVNULL)
        psql, isready = str(cluster.bindir / "psql"), str(cluster.bindir / "pg_isready")
        rows = {
            "psql -c 'SELECT 1'": [psql, "-X", "-c", "SELECT 1"],
            "pg_isready": [isready],
            "dbinit --help": [dbinit, "--help"],
            "dbinit status": [dbinit, "status"],
            f"dbinit setup (nothing to change, {args.tables} tables)": [dbinit, "setup"],
            f"dbinit check ({args.tables} tables)": [dbinit, "check"],
        }
        samples = round_robin(rows, args.runs, env)

    setup = f"dbinit setup (nothing to change, {args.tables} tables)"
    goals = {setup: ("< 500 ms", statistics.median(samples[setup]) < 0.5)}
    if not report("dbinit speed", samples, "psql -c 'SELECT 1'", goals):
        sys.exit(1)


if __name__ == "__main__":
    main()
