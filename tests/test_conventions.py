"""The conventions every tool shares, held to the one place they are written down.

Exit codes: the table in tools/common/README.md; each tool's representative errors
(run as a user runs them) exit with the code of their row.
"""

from __future__ import annotations

import fcntl
import re
import subprocess
from pathlib import Path

import pexpect
import pytest

from odbox_common.errors import ExitCode
from tests.backup.helpers import backup_ok, env_for, make_odoo
from tests.dbinit.helpers import clean_env as dbinit_env
from tests.helpers import one_error_line, run_tool, tool_path
from tests.odoo_data import Shape
from tests.vaultgen.helpers import clean_env as vaultgen_env

COMMON_README = Path(__file__).parents[1] / "tools/common/README.md"
TOOLS = ("odbox-backup", "dbinit", "vaultgen", "ec2-install", "k8s-migrate")


def exit_code_table() -> dict[str, int]:
    """The README's exit-code table: name → code."""
    rows = re.findall(r"^\| (\d+) \| ([A-Z]+) \|", COMMON_README.read_text(), flags=re.M)
    return {name: int(code) for code, name in rows}


def code_of(row: str) -> int:
    return exit_code_table()[row]


def refused(result: subprocess.CompletedProcess[str], row: str, message: str) -> None:
    assert result.returncode == code_of(row), result.stderr
    assert message in one_error_line(result)


def test_the_table_is_the_exit_codes_every_tool_uses():
    assert exit_code_table() == {code.name: int(code) for code in ExitCode}


@pytest.mark.parametrize("tool", TOOLS)
def test_an_unknown_option_is_a_usage_error_in_every_tool(tool):
    refused(run_tool(tool, "--no-such-option"), "USAGE", "No such option: --no-such-option")


def test_a_place_holding_nothing_is_a_usage_error_in_every_tool(tmp_path, postgres):
    nowhere = tmp_path / "nowhere"
    env = env_for(postgres, None)
    refused(run_tool("odbox-backup", "list", "--repo", nowhere, env=env), "USAGE",
            f"no repository at {nowhere}")  # fmt: skip
    refused(run_tool("vaultgen", "--vault", nowhere, "check", env=vaultgen_env()), "USAGE",
            f"no vault at {nowhere}")  # fmt: skip
    dsn = postgres.dsn.replace("dbname=postgres", "dbname=nope")
    refused(run_tool("dbinit", "check", "--dsn", dsn, env=dbinit_env()), "USAGE",
            'database "nope" does not exist')  # fmt: skip


def test_an_unknown_and_an_ambiguous_snapshot_id_are_both_usage_errors(tmp_path, postgres):
    env = env_for(postgres, None)
    filestore = tmp_path / "filestore"
    make_odoo(postgres, "odoo_conventions", filestore, Shape.small(), seed=21)
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    for _ in range(2):
        backup_ok(
            env, "run", "--repo", repo, "--db", "odoo_conventions", "--filestore", str(filestore)
        )
    refused(run_tool("odbox-backup", "show", "--repo", repo, "20990101T000000Z", env=env),
            "USAGE", "no snapshot 20990101T000000Z")  # fmt: skip
    refused(run_tool("odbox-backup", "show", "--repo", repo, "2", env=env), "USAGE",
            "2 matches 2 snapshots")  # fmt: skip


def test_a_server_that_is_not_there_is_a_failure(tmp_path):
    result = run_tool("dbinit", "check", "--dsn", f"host={tmp_path}", env=dbinit_env())
    refused(result, "FAILED", "is PostgreSQL running?")


def test_a_check_that_finds_problems_exits_with_problems(tmp_path, postgres):
    vault = tmp_path / "vault"
    assert run_tool("vaultgen", "--vault", vault, "--batch", env=vaultgen_env()).returncode == 0
    (vault / "passwords/root.txt").chmod(0o640)
    checked = run_tool("vaultgen", "--vault", vault, "check", env=vaultgen_env())
    assert checked.returncode == code_of("PROBLEMS"), checked.stdout
    # A cluster nobody ran `dbinit setup` on lacks the roles and databases setup makes.
    checked = run_tool("dbinit", "check", "--dsn", postgres.dsn, env=dbinit_env())
    assert checked.returncode == code_of("PROBLEMS"), checked.stdout


def test_a_held_lock_exits_with_locked(tmp_path):
    vault = tmp_path / "vault"
    assert run_tool("vaultgen", "--vault", vault, "--batch", env=vaultgen_env()).returncode == 0
    with (vault / ".lock").open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_tool("vaultgen", "--vault", vault, "generate", "--batch", env=vaultgen_env())
        refused(result, "LOCKED", "another vaultgen run")


def test_ctrl_c_exits_with_interrupted(tmp_path):
    child = pexpect.spawn(str(tool_path("vaultgen")), ["--vault", str(tmp_path / "v"), "generate"],
                          env=vaultgen_env(), timeout=30)  # fmt: skip
    child.expect("Password for admin")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == code_of("INTERRUPTED")
    assert b"error: interrupted" in child.before
