"""CI fails when an Odoo tree is there but the real-Odoo tests were skipped (.ci/run sets
ODBOX_REQUIRE_ODOO_TESTS=1; tests/box/conftest.py checks it at the end of the session)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_box_tests(tmp_path: Path, *args: str, require: bool) -> subprocess.CompletedProcess[str]:
    tree = tmp_path / "odoo"
    tree.mkdir()
    (tree / "odoo-bin").write_text("")  # a tree the tests find, on a PATH without nix
    env = {k: v for k, v in os.environ.items() if k != "ODBOX_REQUIRE_ODOO_TESTS"}
    env.update(ODOO_SRC=str(tree), PATH=str(Path(sys.executable).parent))
    if require:
        env["ODBOX_REQUIRE_ODOO_TESTS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip


def test_ci_fails_when_an_odoo_tree_is_there_but_the_odoo_tests_skipped(tmp_path):
    result = run_box_tests(tmp_path, "tests/box/test_health.py", require=True)
    assert result.returncode == 1, result.stdout
    assert "error: an Odoo tree is at" in result.stdout
    assert "the odoo tests did not run" in result.stdout and "nix-instantiate" in result.stdout


def test_ci_fails_when_the_odoo_tests_were_deselected(tmp_path):
    result = run_box_tests(tmp_path, "tests/box/test_health.py", "-m", "not odoo", require=True)
    assert result.returncode == 1, result.stdout
    assert "none was selected" in result.stdout


def test_outside_ci_a_skip_is_only_a_skip(tmp_path):
    result = run_box_tests(tmp_path, "tests/box/test_health.py", require=False)
    assert result.returncode == 0, result.stdout
    assert "skipped" in result.stdout
