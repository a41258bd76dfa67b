"""Staging copies: `odbox-backup restore --neutralize` runs Odoo's own neutralization on the
restored database before the swap (before any Odoo starts on it), and `odbox-deploy neutralize`
does it to a database in place. What Odoo's neutralization leaves is Odoo's: every mail server
off, plus one active dummy server of its own to the host `invalid` (so that a server given on
Odoo's command line is not used either), and every cron off but base's autovacuum (it only
cleans the database)."""

from __future__ import annotations

import subprocess

import pytest

from tests.box.harness import DB, Box
from tests.box.helpers import latest_id
from tests.deploy.helpers import ODBOX_DEPLOY, Deploy
from tests.helpers import one_error_line

pytestmark = pytest.mark.odoo

DUMMY = ("neutralization - disable emails", "invalid")


def _production_mail_server(box: Box) -> None:
    box.sql("INSERT INTO ir_mail_server (name, smtp_host, smtp_port, smtp_encryption, "
            "smtp_authentication, active, sequence) VALUES ('production smtp', "
            "'smtp.example.com', 587, 'starttls', 'login', true, 10)", DB)  # fmt: skip


def _active(box: Box, db: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    servers = box.sql("SELECT name, smtp_host FROM ir_mail_server WHERE active ORDER BY id", db)
    crons = box.sql(
        "SELECT d.module || '.' || d.name FROM ir_cron c LEFT JOIN ir_model_data d ON "
        "d.model = 'ir.cron' AND d.res_id = c.id WHERE c.active ORDER BY 1", db,
    )  # fmt: skip
    return servers, crons


def _assert_neutralized(box: Box, db: str) -> None:
    servers, crons = _active(box, db)
    assert servers == [DUMMY]
    assert crons == [("base.autovacuum_job",)]
    assert box.sql("SELECT value FROM ir_config_parameter WHERE key = "
                   "'database.is_neutralized'", db) == [("true",)]  # fmt: skip


def test_restore_neutralize_leaves_no_active_mail_server_or_cron_before_odoo_starts(
    deploy: Deploy,
) -> None:
    box = deploy.box
    _production_mail_server(box)
    servers, crons = _active(box, DB)
    assert ("production smtp", "smtp.example.com") in servers and len(crons) > 3
    env = deploy.env(ODBOX_NEUTRALIZE_COMMAND=f"{ODBOX_DEPLOY} neutralize")
    run = subprocess.run([str(box.tools), "run"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    restore = subprocess.run(
        [str(box.tools), "restore", latest_id(box, deploy.repo), "--neutralize"],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert restore.returncode == 0, restore.stdout + restore.stderr
    _assert_neutralized(box, DB)
    # the production database is kept beside it, untouched
    [(kept,)] = box.sql("SELECT datname FROM pg_database WHERE datname LIKE 'odoo\\_before\\_%'")
    assert ("production smtp", "smtp.example.com") in _active(box, kept)[0]


def test_a_failing_neutralization_swaps_nothing(deploy: Deploy) -> None:
    box = deploy.box
    env = deploy.env(ODBOX_NEUTRALIZE_COMMAND="false")
    assert subprocess.run([str(box.tools), "run"], env=env, capture_output=True).returncode == 0
    restore = subprocess.run(
        [str(box.tools), "restore", latest_id(box, deploy.repo), "--neutralize"],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert restore.returncode == 1
    assert "nothing was swapped" in one_error_line(restore)
    assert box.sql("SELECT datname FROM pg_database WHERE datname LIKE 'odoo\\_restore\\_%' "
                   "OR datname LIKE 'odoo\\_before\\_%'") == []  # fmt: skip


def test_odbox_deploy_neutralize_neutralizes_a_database_in_place(deploy: Deploy) -> None:
    box = deploy.box
    _production_mail_server(box)
    out = deploy.ok("neutralize", "--db", DB)
    assert f"neutralized database {DB}" in out
    _assert_neutralized(box, DB)
