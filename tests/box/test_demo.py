"""`just demo`'s real-Odoo part (tests/box/demo.py) runs to the end and shows the restored data."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.box.harness import ROOT


@pytest.mark.odoo
def test_the_demo_restores_and_odoo_serves_the_restored_data(odoo_install):
    result = subprocess.run(
        [sys.executable, "-m", "tests.box.demo"], cwd=ROOT, capture_output=True, text=True,
        timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    out = result.stdout
    assert "serves http://127.0.0.1:" in out and 'GET /odbox/health: 200 {"status": "pass"' in out
    assert (
        "partners now: box-new after the backup, box-partner 1, box-partner 2, box-renamed" in out
    )
    assert "partners: box-partner 0, box-partner 1, box-partner 2\n" in out
    assert "every checksum as before the change: True" in out
    assert "no drift" in out


def test_the_demo_says_how_to_get_odoo_when_there_is_none(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ODOO_SRC": ""}
    result = subprocess.run(
        [sys.executable, "-m", "tests.box.demo", "--check"], cwd=ROOT, capture_output=True,
        text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout.startswith("no real Odoo here: no Odoo source tree: set ODOO_SRC")
    assert "tests/box/README.md says how to get one" in result.stdout
