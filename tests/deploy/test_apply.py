"""odbox-deploy plan and apply on a real Odoo 17: exactly the changed module is updated behind a
snapshot, and a failing update is rolled back, data and code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.box.helpers import wait_serving
from tests.deploy.helpers import (
    DEMO,
    Deploy,
    demo_fields,
    demo_records,
    filestore_checksums,
    install_version,
    table_checksums,
)
from tests.helpers import one_error_line

pytestmark = pytest.mark.odoo


def test_apply_with_nothing_changed_exits_at_once_and_takes_no_snapshot(deploy: Deploy) -> None:
    assert deploy.plan()["nothing_to_do"] is True
    # How fast (the goal: 2 s) is measured by bench/deploy_downtime.py, not here: a timed
    # assertion would fail on a busy machine. What makes it fast is checked: no snapshot,
    # Odoo neither stopped nor started.
    result = deploy.run("apply")
    assert result.returncode == 0, result.stderr
    assert "nothing to deploy" in result.stdout
    assert deploy.snapshots() == []
    assert deploy.box.pid() is None  # Odoo neither stopped nor started


def test_v2_updates_only_its_module_and_odoo_serves_the_new_field(deploy: Deploy) -> None:
    box = deploy.box
    box.start()
    install_version(box, 2)
    plan = deploy.plan()
    assert plan["update"] == [DEMO], plan
    assert plan["install"] == [] and plan["missing"] == []
    assert plan["odoo_arguments"] == ["-u", DEMO]
    since = box.log_size()
    result = json.loads(deploy.ok("apply", "--json"))
    assert result["outcome"] == "updated", result
    assert result["modules"] == [DEMO]
    [snapshot] = deploy.snapshots()
    assert snapshot["id"] == result["snapshot"] and snapshot["tags"] == ["pre-deploy"]
    log = Path(result["log"]).read_text()
    updated = {line.split("Loading module ")[1].split()[0] for line in log.splitlines()
               if "Loading module " in line and " INFO " in line}  # fmt: skip
    assert updated == {DEMO}, f"Odoo updated more than the changed module: {updated}"
    wait_serving(box)
    assert "colour" in demo_fields(box)
    assert demo_records(box) == [{"name": "first", "colour": False},
                                 {"name": "second", "colour": "blue"}]  # fmt: skip
    assert box.log_errors(since) == []
    assert deploy.status()["state"] == "updated"
    assert deploy.plan()["nothing_to_do"] is True  # recorded: a second apply has nothing to do


def test_v3_failing_update_restores_the_database_and_filestore_and_odoo_serves_v2(
    deploy: Deploy,
) -> None:
    box = deploy.box
    install_version(box, 2)
    deploy.ok("apply")
    box.stop()  # a quiet database: the pre-deploy state is what the snapshot holds
    before_tables = table_checksums(box)
    before_files = filestore_checksums(box.filestore)
    install_version(box, 3)
    captured = deploy.base / "captured.json"
    capture = deploy.hook("capture", "restarting", str(captured), str(box.cluster.socket_dir),
                          str(box.cluster.port), "odoo", str(box.filestore))  # fmt: skip
    result = deploy.run("apply", ODBOX_DEPLOY_HOOK=capture)
    assert result.returncode == 1, result.stdout + result.stderr
    line = one_error_line(result)
    assert f"the update of {DEMO} failed" in line
    assert "rolled back to snapshot" in line
    status = deploy.status()
    assert status["state"] == "rolled-back" and status["module"] == DEMO
    assert status["log"] in line
    assert "fails its update on purpose" in Path(status["log"]).read_text()
    # Before Odoo started again: the database and filestore are the pre-deploy ones.
    after = json.loads(captured.read_text())
    assert after["tables"] == before_tables
    assert after["files"] == before_files
    # The failed database is kept beside it, as odbox-backup keeps previous ones.
    kept = [n for (n,) in box.sql("SELECT datname FROM pg_database WHERE datname LIKE "
                                  "'odoo\\_before\\_%'")]  # fmt: skip
    assert len(kept) == 1
    wait_serving(box)
    assert "colour" in demo_fields(box) and "size" not in demo_fields(box)  # the v2 code
    assert demo_records(box) == [{"name": "first", "colour": False},
                                 {"name": "second", "colour": "blue"}]  # fmt: skip
    assert deploy.plan()["nothing_to_do"] is True  # the v2 code on the v2 data
