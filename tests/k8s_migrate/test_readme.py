"""Every ```sh example of tools/k8s-migrate/README.md runs, in order, against the emulator."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.helpers import run_sh_examples
from tests.k8s_migrate.shop import K8S_MIGRATE, NS, Shop

README = Path(__file__).resolve().parents[2] / "tools/k8s-migrate/README.md"


def test_every_example_in_the_readme_runs(shop: Shop) -> None:
    env = {
        **shop.env,
        "DB": shop.db,
        "PATH": f"{K8S_MIGRATE.parent}{os.pathsep}{os.environ['PATH']}",
    }
    work = shop.tmp / "work"
    work.mkdir()
    shop.k8s.add_secret(NS, "odoo-db", {"password": "its password"})  # the RDS example's
    plan, pull, zipped, rds = run_sh_examples(README, work, env, at_least=4)
    assert "nothing was changed" in plan and "scale deployment shop/odoo from 2 to 0" in plan
    assert re.search(r"^\d{8}T\d{6}Z-[0-9a-f]{8}", pull, flags=re.M), pull  # odbox-backup list
    files = sum(1 for p in shop.filestore.rglob("*") if p.is_file())
    assert int(zipped.strip().splitlines()[-1]) == files
    assert shop.k8s.replicas(NS, "odoo") == 0  # a pull leaves Odoo down unless --scale-back
    assert int(rds.strip()) == 1  # plan of a database with no pod: pg_dump in the helper pod
