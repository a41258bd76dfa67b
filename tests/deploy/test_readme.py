"""Every ```sh example of tools/deploy/README.md runs, in order, on the real-Odoo box with the
environment a box's unit sets (ODBOX_*)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.box.harness import DB
from tests.deploy.helpers import ODBOX_DEPLOY, Deploy
from tests.helpers import run_sh_examples

README = Path(__file__).resolve().parents[2] / "tools/deploy/README.md"

pytestmark = pytest.mark.odoo


def test_every_example_in_the_readme_runs(deploy: Deploy, tmp_path: Path) -> None:
    deploy.box.sql(f"CREATE DATABASE staging TEMPLATE {DB} OWNER odoo")
    env = deploy.env(STAGING_DB="staging")
    env["PATH"] = f"{ODBOX_DEPLOY.parent}{os.pathsep}{env['PATH']}"
    plan, apply, neutralize = run_sh_examples(README, tmp_path, env, at_least=3)
    assert "nothing to deploy" in plan
    assert "nothing to deploy" in apply and "updated: deployed" not in apply
    assert "neutralized database staging" in neutralize
    assert deploy.box.sql("SELECT value FROM ir_config_parameter WHERE key = "
                          "'database.is_neutralized'", "staging") == [("true",)]  # fmt: skip
