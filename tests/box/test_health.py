"""/odbox/health answers its JSON even when Odoo has no database (odbox_health is loaded
server-wide by the module's odoo.conf), so monitoring never gets Odoo's 404 page."""

from __future__ import annotations

import pytest

from tests.box.harness import DB

pytestmark = pytest.mark.odoo


def test_health_says_no_database_selected_when_odoo_finds_no_database(box):
    box.start(workers=2)
    # The database goes away under a running Odoo (its unit would not start without it).
    box.sql(f"ALTER DATABASE {DB} WITH ALLOW_CONNECTIONS false")
    box.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", "postgres", DB
    )
    box.sql(f"ALTER DATABASE {DB} RENAME TO odoo_elsewhere")
    health = box.get("/odbox/health")
    assert health.status == 503, health.body[:200]
    assert health.headers["Content-Type"].startswith("application/json")
    assert health.json() == {
        "status": "fail",
        "checks": {
            "database": {"status": "fail", "error": "no database selected"},
            "filestore": {"status": "fail", "error": "no database selected"},
        },
    }


def test_health_passes_on_a_database_without_odbox_health_installed(box):
    """As on a database restored from elsewhere: nobody installed the addon there."""
    # What a database from elsewhere holds once Odoo listed the addon (Odoo refuses to
    # uninstall a server-wide module, so the row is set as such a database has it).
    box.sql("UPDATE ir_module_module SET state = 'uninstalled' WHERE name = 'odbox_health'", DB)
    box.start(workers=0)
    [module] = box.rpc("ir.module.module", "search_read", [["name", "=", "odbox_health"]],
                       fields=["state"])  # fmt: skip
    assert module["state"] == "uninstalled"
    health = box.get("/odbox/health")
    assert health.status == 200, health.body[:200]
    database = health.json()["checks"]["database"]
    assert (database["status"], database["name"]) == ("pass", DB)
