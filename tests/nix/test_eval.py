"""Deeper, local only: the modules evaluated with nixpkgs' real lib.evalModules.

Fetch nix-community/nixpkgs.lib (never commit it) and point NIXPKGS_LIB at its
lib/ folder; CI has no copy, so there this file is skipped and test_nix.py's
checks (parse, options, tool calls) are what runs.
"""

from __future__ import annotations

import json
import os
import re
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
        'identityFile = "/run/odbox-vault/backup-identity"; mountBackupDisk = true; '
        'offsite = { enable = true; repo = "s3://b/p"; }; }; }'
    )
    services = config["systemd"]["services"]
    hot = services["odbox-backup-hot"]
    assert hot["serviceConfig"]["ExecStart"].split()[0].endswith("/bin/odbox-backup")
    assert hot["serviceConfig"]["ExecStart"].endswith("run --hot --wait 3600")
    assert (
        "prune --wait 3600 --keep-daily 7"
        in services["odbox-backup-cold"]["serviceConfig"]["ExecStartPost"]
    )
    assert hot["unitConfig"]["RequiresMountsFor"] == "/backup"
    assert services["odbox-backup-restore@"]["serviceConfig"]["ExecStart"].endswith("restore %i")
    assert "wantedBy" not in services["odbox-backup-restore@"]
    assert "odbox-backup-restore@" not in config["systemd"]["timers"]
    offsite = services["odbox-backup-offsite"]["serviceConfig"]["ExecStart"]
    assert offsite.endswith("copy all --to s3://b/p --wait 3600")
    timers = config["systemd"]["timers"]
    assert timers["odbox-backup-cold"]["timerConfig"]["OnCalendar"] == ["Sun *-*-* 03:00:00"]
    env = hot["environment"]
    assert env["ODBOX_BACKUP_REPO"] == "/backup/odbox"
    assert env["ODBOX_BACKUP_IDENTITY"] == "/run/odbox-vault/backup-identity"


def test_without_an_identity_the_box_backs_up_but_does_not_prune():
    config = evaluate("{ odbox.backup.enable = true; }")
    hot = config["systemd"]["services"]["odbox-backup-hot"]
    assert "ExecStartPost" not in hot["serviceConfig"]
    assert not hot.get("unitConfig")
    assert "ODBOX_BACKUP_IDENTITY" not in hot["environment"]


def test_offsite_without_a_repo_or_an_identity_fails_its_assertions():
    config = evaluate("{ odbox.backup = { enable = true; offsite.enable = true; }; }")
    assert [a["message"] for a in config["assertions"] if not a["assertion"]] == [
        "odbox.backup.offsite.enable needs odbox.backup.offsite.repo",
        "odbox.backup.offsite.enable needs odbox.backup.identityFile to read the local repository",
    ]


def test_server_base_opens_only_22_80_443_and_brings_os_base():
    config = evaluate("{ odbox.server-base.enable = true; }")
    assert config["networking"]["firewall"]["allowedTCPPorts"] == [22, 80, 443]
    assert config["odbox"]["os-base"]["enable"] is True
    assert config["services"]["openssh"]["settings"]["PermitRootLogin"] == "prohibit-password"


def test_standard_login_reads_its_hashes_from_the_vault_before_the_users_script(tmp_path):
    vault = tmp_path / "vault"
    (vault / "passwords").mkdir(parents=True)
    (vault / "passwords" / "root.yesc.age").write_text("age")
    config = evaluate(
        f"{{ odbox.vault = {{ enable = true; source = {vault}; }}; "
        'odbox.login = { enable = true; mode = "standard"; rootKeys = [ "ssh-ed25519 A" ]; }; }'
    )
    users = config["users"]["users"]
    assert users["root"]["hashedPasswordFile"] == "/run/odbox-vault/root-password-hash"
    assert users["admin"]["hashedPasswordFile"] == "/run/odbox-vault/admin-password-hash"
    assert users["admin"]["extraGroups"] == ["wheel"] and config["users"]["mutableUsers"] is False
    scripts = config["system"]["activationScripts"]
    assert scripts["users"]["deps"] == ["odbox-vault-decrypt"]
    decrypt = scripts["odbox-vault-decrypt"]["text"]
    assert "/bin/vaultgen decrypt --identity /var/lib/odbox/age.key --out " in decrypt
    m = re.search(
        r"/run/odbox-vault/root-password-hash --mode 0400 (/nix/store/\w{32}-odbox-vault)/"
        r"passwords/root.yesc.age", decrypt
    )  # fmt: skip
    assert m, decrypt
    # only the .age files were copied to the store (builtins.path with a filter)
    if Path(m.group(1)).exists():
        assert sorted(p.name for p in Path(m.group(1)).rglob("*") if p.is_file()) == [
            "root.yesc.age"
        ]
    assert (
        "chown root:root /run/odbox-vault/admin-password-hash"
        in scripts["odbox-vault-owners"]["text"]
    )
    assert config["services"]["openssh"]["settings"]["PasswordAuthentication"] is True
    assert [a for a in config["assertions"] if not a["assertion"]] == []


def test_cloud_login_needs_a_key_and_refuses_passwords():
    config = evaluate("{ odbox.login.enable = true; }")
    failing = [a["message"] for a in config["assertions"] if not a["assertion"]]
    assert failing == [
        "odbox.login needs at least one SSH key (rootKeys or adminKeys), "
        "or nobody can log in when the passwords are locked"
    ]
    config = evaluate('{ odbox.login = { enable = true; adminKeys = [ "ssh-ed25519 AAAA x" ]; }; }')
    assert config["services"]["openssh"]["settings"]["PasswordAuthentication"] is False
    assert "hashedPasswordFile" not in config["users"]["users"]["admin"]


def test_snakeoil_copies_the_cleartext_test_secrets_and_warns():
    config = evaluate(
        '{ odbox.vault = { enable = true; backend = "snakeoil"; '
        'secrets.odoo-admin = { file = "passwords/odoo-admin.txt.age"; owner = "odoo"; }; }; }'
    )
    text = config["system"]["activationScripts"]["odbox-vault-decrypt"]["text"]
    assert re.search(r"install -m 0400 \S*-snakeoil-sec/passwords/odoo-admin.txt\S* "
                     r"\S*/run/odbox-vault/odoo-admin.tmp", text)  # fmt: skip
    assert "vaultgen" not in text
    assert any("snakeoil" in w for w in config["warnings"])
