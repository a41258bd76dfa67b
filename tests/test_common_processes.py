"""Running the box's configured commands (Odoo's stop and start): one line when they fail,
the same in odbox-backup and odbox-deploy (both call `odbox_common.processes.run_command`)."""

from __future__ import annotations

import pytest

from odbox_backup.service import OdooService, ServiceError
from odbox_common.errors import ToolError
from odbox_common.processes import run_command


def test_a_command_gives_its_stdout():
    assert run_command(["sh", "-c", "echo started"], "start Odoo", 30) == "started\n"


def test_a_failing_command_is_named_with_its_exit_status_and_last_line():
    with pytest.raises(ToolError) as e:
        run_command(["sh", "-c", "echo first >&2; echo 'unit not found' >&2; exit 5"],
                    "stop Odoo", 30)  # fmt: skip
    message = str(e.value)
    assert message.startswith("`sh -c ") and "failed to stop Odoo (exit status 5)" in message
    assert message.endswith(": unit not found") and "\n" not in message


def test_a_missing_program_says_it_cannot_run_it():
    with pytest.raises(ToolError, match=r"^cannot start Odoo with `/nonexistent/odoo-start`: "):
        run_command(["/nonexistent/odoo-start"], "start Odoo", 30)


def test_odbox_backups_failed_odoo_stop_is_one_service_error_and_odoo_is_started_again(tmp_path):
    started = tmp_path / "started"
    service = OdooService.from_options(None, "sh -c 'exit 4'", f"touch {started}")
    body_ran = False
    with (
        pytest.raises(
            ServiceError, match=r"^`sh -c 'exit 4'` failed to stop Odoo \(exit status 4\)$"
        ),
        service.stopped(),
    ):
        body_ran = True
    assert not body_ran and started.exists()
