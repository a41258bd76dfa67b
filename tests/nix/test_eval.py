"""Deeper, local only: the modules evaluated with nixpkgs' real lib.evalModules.

Fetch nix-community/nixpkgs.lib (never commit it) and point NIXPKGS_LIB at its
lib/ folder; CI has no copy, so there this file is skipped and test_nix.py's
checks (parse, options, tool calls) are what runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.nix.test_nix import HERE, NIX_ENV, _nix

LIB = os.environ.get("NIXPKGS_LIB")
pytestmark = pytest.mark.skipif(
    not LIB or not (Path(LIB) / "default.nix").exists(),
    reason="NIXPKGS_LIB is not set to a nixpkgs lib/ folder (fetch nix-community/nixpkgs.lib)",
)


def evaluate(config: str) -> dict[str, Any]:
    expression = f"import {HERE / 'eval-modules.nix'} {{ nixpkgsLib = {LIB}; config = {config}; }}"
    result = subprocess.run(
        [_nix("nix-instantiate"), "--eval", "--strict", "--json", "--expr", expression],
        capture_output=True, text=True, env=NIX_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_nothing_is_configured_until_enabled():
    config = evaluate("{ }")
    assert config["systemd"]["services"] == {} and config["systemd"]["timers"] == {}
    assert config["environment"]["systemPackages"] == [] and config["swapDevices"] == []
    assert config["fileSystems"] == {} and config["networking"]["firewall"] == {}
    assert (
        config["services"]["openssh"] == {} and config["services"]["postgresql"]["identMap"] == ""
    )


def test_the_backup_units_call_odbox_backup_as_documented():
    config = evaluate(
        '{ odbox.backup = { enable = true; cold = [ "Sun *-*-* 03:00:00" ]; '
        'offsite = { enable = true; repo = "s3://b/p"; }; }; }'
    )
    services = config["systemd"]["services"]
    bin_ = services["odbox-backup-hot"]["serviceConfig"]["ExecStart"].split()[0]
    assert bin_.endswith("/bin/odbox-backup")
    assert services["odbox-backup-hot"]["serviceConfig"]["ExecStart"].endswith(
        "run --hot --wait 3600"
    )
    assert "prune --keep-daily 7" in services["odbox-backup-cold"]["serviceConfig"]["ExecStartPost"]
    assert services["odbox-backup-restore@"]["serviceConfig"]["ExecStart"].endswith("restore %i")
    assert "wantedBy" not in services["odbox-backup-restore@"]
    assert "odbox-backup-restore@" not in config["systemd"].get("timers", {})
    assert services["odbox-backup-offsite"]["serviceConfig"]["ExecStart"].endswith(
        "copy --to s3://b/p --wait 3600"
    )
    assert config["systemd"]["timers"]["odbox-backup-cold"]["timerConfig"]["OnCalendar"] == [
        "Sun *-*-* 03:00:00"
    ]
    env = services["odbox-backup-hot"]["environment"]
    assert env["ODBOX_BACKUP_REPO"] == "/backup/odbox" and "ODBOX_BACKUP_IDENTITY" not in env


def test_offsite_without_a_repo_fails_its_assertion():
    config = evaluate("{ odbox.backup = { enable = true; offsite.enable = true; }; }")
    assert [a["message"] for a in config["assertions"] if not a["assertion"]] == [
        "odbox.backup.offsite.enable needs odbox.backup.offsite.repo"
    ]


def test_server_base_opens_only_22_80_443_and_brings_os_base():
    config = evaluate("{ odbox.server-base.enable = true; }")
    assert config["networking"]["firewall"]["allowedTCPPorts"] == [22, 80, 443]
    assert config["odbox"]["os-base"]["enable"] is True
    assert config["services"]["openssh"]["settings"]["PermitRootLogin"] == "prohibit-password"
