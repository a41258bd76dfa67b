"""One scheme for the variables every tool reads (tools/common/README.md, "Environment"):
ODBOX_DB for Odoo's database, ODBOX_<TOOL>_DEBUG for tracebacks; an old name still works
for one release, with a warning."""

from __future__ import annotations

import importlib

import pytest
import typer

from odbox_common.runner import RENAMED_VARIABLES
from tests.helpers import run_tool
from tests.vaultgen.helpers import clean_env as vaultgen_env

CLI_MODULES = {
    "odbox-backup": "odbox_backup.cli",
    "dbinit": "dbinit.cli",
    "vaultgen": "vaultgen.cli",
    "ec2-install": "ec2_install.cli",
    "k8s-migrate": "k8s_migrate.cli",
    "odbox-deploy": "odbox_deploy.cli",
}


@pytest.mark.parametrize("tool", CLI_MODULES)
def test_every_tools_debug_switch_is_odbox_tool_debug(tool):
    group = typer.main.get_command(importlib.import_module(CLI_MODULES[tool]).app)
    expected = "ODBOX_" + tool.removeprefix("odbox-").replace("-", "_").upper() + "_DEBUG"
    for command in [group, *getattr(group, "commands", {}).values()]:
        for param in command.params:
            if "--debug" in param.opts:
                assert param.envvar == expected, (tool, command.name, param.envvar)


def test_odoos_database_is_odbox_db_in_every_tool_that_names_it():
    for module in CLI_MODULES.values():
        group = typer.main.get_command(importlib.import_module(module).app)
        for command in getattr(group, "commands", {}).values():
            for param in command.params:
                if {"--db", "--odoo-db"} & set(param.opts):
                    assert param.envvar == "ODBOX_DB", (module, command.name, param.opts)


@pytest.mark.parametrize(("variable", "warned"), [("ODBOX_VAULTGEN_DEBUG", False),
                                                  ("VAULTGEN_DEBUG", True)])  # fmt: skip
def test_an_old_debug_name_still_works_for_a_release_with_a_warning(tmp_path, variable, warned):
    result = run_tool("vaultgen", "check", "--vault", tmp_path / "nowhere",
                      env=vaultgen_env(**{variable: "1"}))  # fmt: skip
    assert result.returncode == 1 and "Traceback" in result.stderr
    said = "VAULTGEN_DEBUG is now called ODBOX_VAULTGEN_DEBUG" in result.stderr
    assert said == warned, result.stderr


def test_every_renamed_variable_keeps_the_scheme():
    for old, new, tools in RENAMED_VARIABLES:
        assert new.startswith("ODBOX_") and old != new and tools
