"""odbox-deploy plan on a real Odoo 17: what it finds, and what `apply` refuses."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.box.harness import DB
from tests.deploy.helpers import ADDONS, DEMO, Deploy, demo_fields, install_command, install_version
from tests.helpers import one_error_line

pytestmark = pytest.mark.odoo

AUTO = "odbox_deploy_auto"


def _recorded(deploy: Deploy) -> dict[str, object]:
    [(value,)] = deploy.box.sql("SELECT value FROM ir_config_parameter WHERE key = "
                                "'odbox_deploy.checksums'", DB)  # fmt: skip
    return json.loads(value)  # type: ignore[no-any-return]


def test_an_installed_module_missing_from_the_addons_path_is_refused_with_exit_3(
    deploy: Deploy,
) -> None:
    shutil.rmtree(deploy.box.base / "addons" / DEMO)
    plan = deploy.run("plan", "--json")
    assert plan.returncode == 3
    assert json.loads(plan.stdout)["missing"] == [DEMO]
    apply = deploy.run("apply")
    assert apply.returncode == 3
    assert f"missing from the addons path: {DEMO}" in one_error_line(apply)
    assert deploy.snapshots() == []


def test_a_new_module_odoo_would_auto_install_is_installed(deploy: Deploy) -> None:
    box = deploy.box
    target = box.base / "addons" / AUTO
    shutil.copytree(ADDONS / "auto" / AUTO, target)
    subprocess.run(["chmod", "-R", "a+rX", target], check=True)
    try:
        plan = deploy.plan()
        assert plan["install"] == [AUTO] and plan["update"] == []
        assert plan["odoo_arguments"] == ["-i", AUTO]
        deploy.ok("apply")
        assert box.sql("SELECT state FROM ir_module_module WHERE name = %s", DB, AUTO) == [
            ("installed",)
        ]
        assert AUTO in _recorded(deploy)["modules"]  # type: ignore[operator]
        assert deploy.plan()["nothing_to_do"] is True
    finally:
        shutil.rmtree(target)


def test_a_change_of_odoo_itself_updates_base_which_odoo_widens_to_every_module(
    deploy: Deploy,
) -> None:
    recorded = _recorded(deploy)
    recorded["odoo"] = "0" * 64  # the framework's files as another release had them
    deploy.box.sql("UPDATE ir_config_parameter SET value = %s WHERE key = "
                   "'odbox_deploy.checksums'", DB, json.dumps(recorded))  # fmt: skip
    plan = deploy.plan()
    assert plan["odoo_changed"] is True
    assert plan["odoo_arguments"] == ["-u", "base"]


def test_a_new_series_of_odoo_is_refused(deploy: Deploy) -> None:
    recorded = _recorded(deploy)
    recorded["series"] = "16.0"
    deploy.box.sql("UPDATE ir_config_parameter SET value = %s WHERE key = "
                   "'odbox_deploy.checksums'", DB, json.dumps(recorded))  # fmt: skip
    plan = deploy.run("plan")
    assert plan.returncode == 3
    assert "series changed (16.0 -> 17.0)" in one_error_line(plan)


def test_the_first_deploy_records_and_updates_nothing(deploy: Deploy) -> None:
    deploy.box.sql("DELETE FROM ir_config_parameter WHERE key = 'odbox_deploy.checksums'", DB)
    plan = deploy.plan()
    assert plan["first"] is True and plan["odoo_arguments"] == []
    out = deploy.ok("apply")
    assert "first deploy: recorded the checksums of" in out
    assert deploy.snapshots() == []
    assert deploy.plan()["nothing_to_do"] is True


def test_health_that_does_not_pass_rolls_the_update_back(deploy: Deploy) -> None:
    box = deploy.box
    install_version(box, 2)
    url = f"http://127.0.0.1:{box.http_port}/odbox/no-such-page"
    result = deploy.run("apply", ODBOX_DEPLOY_HEALTH_URL=url, ODBOX_DEPLOY_ROLLBACK=
                        install_command(box, 1), ODBOX_DEPLOY_HEALTH_TIMEOUT="20")  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "health" in one_error_line(result) and "rolled back" in one_error_line(result)
    box.wait_ready()
    assert "colour" not in demo_fields(box)
    assert deploy.status()["state"] == "rolled-back"
