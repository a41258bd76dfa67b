"""A kill -9 of `odbox-deploy apply` at each step of its journal, then a second `apply`: the box
ends updated (the new code on the updated database) or rolled back (the previous code on the
previous database), never a mix; `status` says which. The kill is the --hook of that phase
killing its parent (deterministic: no timing)."""

from __future__ import annotations

import signal

import pytest

from tests.box.helpers import wait_serving
from tests.deploy.helpers import Deploy, demo_fields, demo_records, install_command, install_version

pytestmark = pytest.mark.odoo

V1 = [{"name": "first"}]
V2 = [{"name": "first", "colour": False}, {"name": "second", "colour": "blue"}]


def _kill_then_rerun(deploy: Deploy, phase: str, rollback_to: int) -> tuple[int, str]:
    rollback = install_command(deploy.box, rollback_to)
    killed = deploy.run("apply", ODBOX_DEPLOY_HOOK=deploy.hook("kill", phase),
                        ODBOX_DEPLOY_ROLLBACK=rollback)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    status = deploy.status()
    assert status["state"] == "in-progress" and status["phase"] == phase, status
    again = deploy.run("apply", ODBOX_DEPLOY_ROLLBACK=rollback)
    assert again.returncode in (0, 1), again.stdout + again.stderr
    return again.returncode, deploy.status()["state"]


def _serving(deploy: Deploy) -> list[dict[str, object]]:
    wait_serving(deploy.box)
    assert deploy.plan()["nothing_to_do"] is True  # the code on disk is the database's
    return demo_records(deploy.box)


@pytest.mark.parametrize(
    ("phase", "outcome"),
    [("snapshot", "updated"), ("stopping", "updated"), ("updating", "rolled-back"),
     ("starting", "rolled-back"), ("checking", "rolled-back"), ("recording", "updated")],
)  # fmt: skip
def test_a_kill_during_an_update_then_a_rerun_ends_updated_or_rolled_back(
    deploy: Deploy, phase: str, outcome: str
) -> None:
    deploy.box.start()
    install_version(deploy.box, 2)
    code, state = _kill_then_rerun(deploy, phase, rollback_to=1)
    assert state == outcome and code == (0 if outcome == "updated" else 1)
    if outcome == "updated":
        assert _serving(deploy) == V2
    else:
        assert _serving(deploy) == V1
        assert "colour" not in demo_fields(deploy.box)


@pytest.mark.parametrize("phase", ["rolling-back", "code-rollback", "restarting"])
def test_a_kill_during_a_rollback_then_a_rerun_ends_rolled_back(deploy: Deploy, phase: str) -> None:
    install_version(deploy.box, 2)
    deploy.ok("apply")
    install_version(deploy.box, 3)
    code, state = _kill_then_rerun(deploy, phase, rollback_to=2)
    assert (code, state) == (1, "rolled-back")
    assert _serving(deploy) == V2
    assert "size" not in demo_fields(deploy.box)
