"""A new box, as the NixOS module starts it: dbinit setup, the first-start init, Odoo with
workers 0 and with workers 2 plus the gevent worker; then every boot's PostgreSQL restart plus
dbinit setup, and all of it again."""

from __future__ import annotations

import itertools

import pytest

from tests.box.harness import Box

pytestmark = pytest.mark.odoo

_posts = itertools.count(1)


def assert_serves(box: Box) -> None:
    """A new browser gets the login page, /odbox/health passes, a Discuss message posts."""
    login = box.get("/web/login")
    assert login.status == 200, (login.status, login.headers.get("Location"))
    assert b'name="login"' in login.body
    health = box.get("/odbox/health")
    assert health.status == 200, health.body
    assert health.json()["status"] == "pass"
    assert health.json()["checks"]["database"]["name"] == "odoo"
    n = next(_posts)
    channel = box.rpc("discuss.channel", "create", {"name": f"box {n}"})
    message = box.rpc("discuss.channel", "message_post", [channel], body=f"hello {n}",
                      message_type="comment")  # fmt: skip
    [posted] = box.rpc("mail.message", "read", [message], ["body", "model", "res_id"])
    assert (posted["model"], posted["res_id"]) == ("discuss.channel", channel)
    assert f"hello {n}" in posted["body"]


def test_the_first_start_installs_the_initial_modules_on_dbinits_empty_database(first_start):
    result = first_start.initialize
    assert result.returncode == 0, result.stdout + result.stderr
    assert "database odoo is empty: installing base,odbox_health,mail,contacts" in result.stdout


@pytest.mark.parametrize("workers", [0, 2])
def test_a_new_box_serves_and_still_does_after_a_postgres_restart_and_dbinit_setup(box, workers):
    since = box.log_size()
    box.start(workers)
    assert_serves(box)
    assert box.log_errors(since) == []
    # Odoo's workers (and its cron thread) lose their connections here and log it: the
    # promise is that Odoo serves again without a restart of its own.
    box.restart_postgres()
    box.setup()
    assert_serves(box)
    assert box.check().returncode == 0, box.check().stdout
