"""Every option a systemd unit sets has its ODBOX_* variable (issue 21), so a unit can carry
its settings in Environment= as it does the repository and the database."""

from __future__ import annotations

from pathlib import Path

import typer

from odbox_backup.cli import app
from tests.backup.helpers import backup, backup_ok

UNIT_OPTIONS = {  # what nix/modules/backup's units pass: --wait, and prune's --keep-*
    "run": ["--wait"],
    "copy": ["--wait"],
    "prune": ["--wait", "--keep-last", "--keep-hourly", "--keep-daily", "--keep-weekly",
              "--keep-monthly", "--keep-yearly", "--keep-within", "--keep-within-daily",
              "--keep-tag"],
}  # fmt: skip


def test_every_option_a_unit_sets_has_an_odbox_variable():
    group = typer.main.get_command(app)
    for command, flags in UNIT_OPTIONS.items():
        params = {opt: p for p in group.commands[command].params for opt in p.opts}  # type: ignore[attr-defined]
        for flag in flags:
            envvar = params[flag].envvar
            expected = "ODBOX_BACKUP_" + flag.removeprefix("--").replace("-", "_").upper()
            assert envvar == expected, (command, flag, envvar)


def test_prune_takes_its_policy_and_wait_from_the_environment(local_env, tmp_path: Path):
    repo = str(tmp_path / "repo")
    backup_ok(local_env, "init", "--repo", repo)
    refused = backup(local_env, "prune", "--repo", repo, "--dry-run")
    assert refused.returncode == 2 and "give at least one --keep" in refused.stderr
    env = dict(local_env, ODBOX_BACKUP_KEEP_DAILY="7", ODBOX_BACKUP_WAIT="5")
    backup_ok(env, "prune", "--repo", repo, "--dry-run")
