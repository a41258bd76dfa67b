"""A restore killed at any step of its swap loses nothing, and one command brings the live
pair back: `restore --resume` finishes the swap, `restore --undo` puts the previous pair back.

Killed after its first `ALTER DATABASE … RENAME` there was no live database, a new restore
only said to remove the leftover, and drop-previous then dropped both copies. The kill is
deterministic: ODBOX_BACKUP_TEST_KILL_AT_STEP=N makes the process SIGKILL itself just
before the Nth step of the swap (the journal's write, each SQL statement, each rename, the
sync, Odoo's start, the journal's removal).
"""

from __future__ import annotations

import random
import signal

import psycopg
import pytest

from odbox_backup.swap import KILL_AT_STEP
from tests.backup.helpers import (
    backup,
    backup_ok,
    backup_run,
    db_dsn,
    odoo_service,
    odoo_state,
    snapshot_then_change,
)
from tests.helpers import one_error_line
from tests.odoo_data import add_attachments

# journal; (Odoo stopped) terminate + rename live; terminate + rename restored; 2 folder
# renames; sync; (Odoo started); journal removed
STEPS = 10


@pytest.fixture
def killed(postgres, odoo, local_env, tmp_path, request):
    """A restore of a snapshot killed at step `request.param` of its swap; the states of the
    snapshot and of the live pair before the restore, and the restore's arguments."""
    env = local_env
    name, dsn, filestore = odoo
    repo, snapshot, _ = snapshot_then_change(env, tmp_path, odoo)
    with psycopg.connect(dsn) as conn:  # and files too
        add_attachments(conn, filestore, 2, random.Random(7))
    before = odoo_state(dsn, filestore)
    log, service = odoo_service(tmp_path)
    where = ["--db", name, "--filestore", str(filestore), *service]
    result = backup({**env, KILL_AT_STEP: str(request.param)}, "restore", "--repo", repo,
                    "latest", *where)  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr
    # killed with Odoo stopped; at the last step, once it was started again
    assert log.read_text().split() == ["stop"] + (["start"] if request.param == STEPS else [])
    return env, repo, where, snapshot, before, log


def test_a_restore_killed_before_its_journal_changed_nothing_and_runs_again(
    postgres, odoo, local_env, tmp_path
):
    """Killed at the first step (the journal's write), before Odoo was stopped: the live pair
    is untouched, and running the restore again removes what the killed one left."""
    env = local_env
    name, dsn, filestore = odoo
    repo, snapshot, before = snapshot_then_change(env, tmp_path, odoo)
    log, service = odoo_service(tmp_path)
    where = ["restore", "--repo", repo, "latest", "--db", name, "--filestore", str(filestore),
             *service]  # fmt: skip
    result = backup({**env, KILL_AT_STEP: "1"}, *where)
    assert result.returncode == -signal.SIGKILL
    assert odoo_state(dsn, filestore) == before and not log.exists()
    out = backup_ok(env, *where)
    assert "a killed restore left them" in out
    assert odoo_state(dsn, filestore) == snapshot


def _kept(postgres, name, filestore):
    [db] = postgres.psql(
        f"SELECT datname FROM pg_database WHERE datname LIKE '{name}_before_%'"
    ).splitlines()
    [folder] = filestore.parent.glob("filestore.before-*")
    return db_dsn(postgres, db), folder


@pytest.mark.parametrize("killed", range(2, STEPS + 1), indirect=True)
def test_a_restore_killed_at_any_step_of_its_swap_is_finished_by_resume(postgres, odoo, killed):
    env, repo, where, snapshot, before, log = killed
    name, dsn, filestore = odoo

    again = backup(env, "restore", "--repo", repo, "latest", *where)
    assert again.returncode == 1 and "restore --resume" in one_error_line(again)
    dropped = backup(env, "drop-previous", *where[:4])
    assert dropped.returncode == 1 and "restore --resume" in one_error_line(dropped)

    out = backup_ok(env, "restore", "--resume", *where)
    assert "finished the swap" in out
    assert odoo_state(dsn, filestore) == snapshot
    assert odoo_state(*_kept(postgres, name, filestore)) == before  # nothing lost
    assert log.read_text().split()[-2:] == ["stop", "start"]  # and started again
    assert sorted(p.name for p in filestore.parent.iterdir() if "restore" in p.name) == []
    assert postgres.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '%restore%'") == "0"
    again = backup(env, "restore", "--resume", *where)
    assert again.returncode == 1 and "no interrupted restore" in one_error_line(again)


@pytest.mark.parametrize("killed", [2, 4, 5, 6, 7, 9], indirect=True)
def test_a_restore_killed_during_its_swap_is_undone_by_undo(postgres, odoo, killed):
    env, _, where, _, before, log = killed
    name, dsn, filestore = odoo

    out = backup_ok(env, "restore", "--undo", *where)
    assert "undid the swap" in out
    assert odoo_state(dsn, filestore) == before
    assert log.read_text().split() == ["stop", "stop", "start"]
    left = postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}%'")
    assert left == name and [p.name for p in filestore.parent.iterdir()] == ["filestore"]


def test_every_step_of_the_swap_has_a_kill_point(odoo, local_env, tmp_path):
    """STEPS is the whole swap: a kill hook one past it is never reached."""
    env = local_env
    name, _, filestore = odoo
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_run(env, repo, odoo)
    backup_ok({**env, KILL_AT_STEP: str(STEPS + 1)}, "restore", "--repo", repo, "latest",
              "--db", name, "--filestore", str(filestore))  # fmt: skip


@pytest.mark.parametrize("killed", [4], indirect=True)
def test_drop_previous_refuses_while_the_live_database_is_missing(postgres, odoo, killed):
    """Killed after the live database became `_before_`: the kept copies are all there is.
    drop-previous refuses (the journal) and, with the journal gone, still refuses while the
    live database is missing; --leftovers drops only what killed restores left."""
    env, _, where, _, before, _ = killed
    name, _, filestore = odoo
    from odbox_backup.swap import journal_path

    journal_path(filestore).unlink()  # as if it were lost: the live database is still missing
    result = backup(env, "drop-previous", *where[:4])
    assert result.returncode == 1 and "does not exist" in one_error_line(result)
    out = backup_ok(env, "drop-previous", *where[:4], "--leftovers")
    assert "restore_" in out and "before" not in out
    [kept] = postgres.psql(
        f"SELECT datname FROM pg_database WHERE datname LIKE '{name}_before_%'"
    ).splitlines()
    assert odoo_state(db_dsn(postgres, kept), filestore) == before  # the folder was not moved yet
