"""Deeper, local only: the modules and every node evaluated with nixpkgs' real lib.evalModules,
over nixpkgs' option names and types (nixos-options.nix; how it differs: README.md).

Fetch nix-community/nixpkgs.lib (never commit it) and point NIXPKGS_LIB at its
lib/ folder; CI has no copy, so there this file is skipped and test_nix.py's
checks (parse, options, tool calls) are what runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.nix.test_nix import HERE, NIX_ENV, ROOT, evaluate_json

LIB = os.environ.get("NIXPKGS_LIB")
pytestmark = pytest.mark.skipif(
    not LIB or not (Path(LIB) / "default.nix").exists(),
    reason="NIXPKGS_LIB is not set to a nixpkgs lib/ folder (fetch nix-community/nixpkgs.lib)",
)


def evaluate(config: str, inline_files: bool = False, **more: str) -> dict[str, Any]:
    """The configuration the modules make; with inline_files, generated files appear as their
    text («name: …») where their store path would be. `more`: eval-modules.nix's other
    arguments, as Nix expressions (node, packages, withModules)."""
    inline = "true" if inline_files else "false"
    extra = "".join(f"{name} = {value}; " for name, value in more.items())
    expression = (
        f"import {HERE / 'eval-modules.nix'} "
        f"{{ nixpkgsLib = {LIB}; config = {config}; inlineFiles = {inline}; {extra}}}"
    )
    return dict(evaluate_json(expression))


def failing(config: dict[str, Any]) -> list[str]:
    """The messages of the assertions that do not hold."""
    return [a["message"] for a in config["assertions"] if not a["assertion"]]


def test_nothing_is_configured_until_enabled():
    config = evaluate("{ }")
    assert config["systemd"]["services"] == {} and config["systemd"]["timers"] == {}
    assert config["environment"]["systemPackages"] == [] and config["swapDevices"] == []
    without = evaluate("{ }", withModules="false")
    assert {k: v for k, v in config.items() if k != "odbox"} == without


def test_the_backup_units_call_odbox_backup_as_documented():
    config = evaluate(
        '{ odbox.backup = { enable = true; cold = [ "Sun *-*-* 03:00:00" ]; '
        'identityFile = "/run/odbox-vault/backup-identity"; mountBackupDisk = true; '
        'offsite = { enable = true; repo = "s3://b/p"; }; }; }'
    )
    services = config["systemd"]["services"]
    hot = services["odbox-backup-hot"]
    assert hot["serviceConfig"]["ExecStart"].split()[0].endswith("/bin/odbox-backup")
    assert hot["serviceConfig"]["ExecStart"].endswith("run --hot")
    assert hot["environment"]["ODBOX_BACKUP_WAIT"] == "3600"
    cold = services["odbox-backup-cold"]
    assert cold["serviceConfig"]["ExecStartPost"].endswith("odbox-backup prune")
    assert cold["environment"]["ODBOX_BACKUP_WAIT"] == "3600"
    assert cold["environment"]["ODBOX_BACKUP_KEEP_DAILY"] == "7"
    assert "ODBOX_BACKUP_WAIT" not in services["odbox-backup-restore@"]["environment"]
    assert hot["unitConfig"]["RequiresMountsFor"] == "/backup"
    assert services["odbox-backup-restore@"]["serviceConfig"]["ExecStart"].endswith("restore %i")
    assert services["odbox-backup-restore@"]["wantedBy"] == []
    assert "odbox-backup-restore@" not in config["systemd"]["timers"]
    offsite = services["odbox-backup-offsite"]["serviceConfig"]["ExecStart"]
    assert offsite.endswith("copy all --to s3://b/p")
    timers = config["systemd"]["timers"]
    assert timers["odbox-backup-cold"]["timerConfig"]["OnCalendar"] == ["Sun *-*-* 03:00:00"]
    env = hot["environment"]
    assert env["ODBOX_BACKUP_REPO"] == "/backup/odbox"
    assert env["ODBOX_BACKUP_IDENTITY"] == "/run/odbox-vault/backup-identity"
    assert env["ODBOX_BACKUP_AUTH_KEY_FILE"] == "/var/lib/odbox/backup-auth.key"  # init writes it


def test_the_box_uses_the_vaults_backup_authentication_key_when_the_vault_has_one(tmp_path):
    """`vaultgen generate` makes backup-auth.key: the box signs with the key the admin holds."""
    vault = tmp_path / "vault"
    vault.mkdir()
    without = evaluate(f"{{ odbox.vault = {{ enable = true; source = {vault}; }}; "
                       "odbox.backup.enable = true; }")  # fmt: skip
    env = without["systemd"]["services"]["odbox-backup-hot"]["environment"]
    assert env["ODBOX_BACKUP_AUTH_KEY_FILE"] == "/var/lib/odbox/backup-auth.key"
    assert "backup-auth-key" not in without["odbox"]["vault"]["secrets"]
    (vault / "backup-auth.key.age").write_text("age")
    config = evaluate(f"{{ odbox.vault = {{ enable = true; source = {vault}; }}; "
                      "odbox.backup.enable = true; }")  # fmt: skip
    env = config["systemd"]["services"]["odbox-backup-hot"]["environment"]
    assert env["ODBOX_BACKUP_AUTH_KEY_FILE"] == "/run/odbox-vault/backup-auth-key"
    secret = config["odbox"]["vault"]["secrets"]["backup-auth-key"]
    assert (secret["file"], secret["owner"], secret["mode"]) == ("backup-auth.key.age", "root",
                                                                 "0400")  # fmt: skip
    decrypt = config["system"]["activationScripts"]["odbox-vault-decrypt"]["text"]
    assert "--out /run/odbox-vault/backup-auth-key --mode 0400" in decrypt


def test_without_an_identity_the_box_backs_up_but_does_not_prune():
    config = evaluate("{ odbox.backup.enable = true; }")
    hot = config["systemd"]["services"]["odbox-backup-hot"]
    assert "ExecStartPost" not in hot["serviceConfig"]
    assert not hot.get("unitConfig")
    assert "ODBOX_BACKUP_IDENTITY" not in hot["environment"]


def test_a_failed_backup_notifies_and_a_daily_check_finds_stale_backups():
    config = evaluate(
        '{ odbox.backup = { enable = true; identityFile = "/run/odbox-vault/id"; '
        'metricsFile = "/var/lib/prometheus-node-exporter-text-files/odbox-backup.prom"; '
        'notify = { mailTo = [ "admin@example.com" ]; '
        'webhookUrlFile = "/run/odbox-vault/webhook-url"; }; '
        'offsite = { enable = true; repo = "s3://b/p"; limitUpload = 512; }; }; }'
    )
    services, timers = config["systemd"]["services"], config["systemd"]["timers"]
    copy = services["odbox-backup-offsite"]["serviceConfig"]["ExecStart"]
    assert copy.endswith("copy all --to s3://b/p --limit-upload 512")
    for name in ("odbox-backup-hot", "odbox-backup-cold", "odbox-backup-offsite",
                 "odbox-backup-staleness"):  # fmt: skip
        assert services[name]["unitConfig"]["OnFailure"] == "odbox-backup-notify@%n.service"
        assert services[name]["environment"]["ODBOX_BACKUP_METRICS_FILE"].endswith(".prom")
    notify = services["odbox-backup-notify@"]
    assert "OnFailure" not in notify.get("unitConfig", {})  # a failing notifier is no loop
    command = notify["serviceConfig"]["ExecStart"]
    assert command.split()[1:3] == ["notify", "%i"]
    assert (
        "--mail-to admin@example.com" in command
        and "--sendmail /run/wrappers/bin/sendmail" in command
    )
    assert "--webhook-url-file /run/odbox-vault/webhook-url" in command  # the path, never the URL
    assert "ODBOX_BACKUP_WEBHOOK" not in json.dumps(notify)
    checks = services["odbox-backup-staleness"]["serviceConfig"]["ExecStart"]
    assert [c.split(" ", 1)[1] for c in checks] == [
        "status --max-age 26h",
        "status --repo s3://b/p --max-age 26h",
    ]
    assert timers["odbox-backup-staleness"]["timerConfig"]["OnCalendar"] == ["*-*-* 09:00:00"]

    quiet = evaluate("{ odbox.backup = { enable = true; staleness.maxAge = null; }; }")
    assert "odbox-backup-notify@" not in quiet["systemd"]["services"]
    assert "odbox-backup-staleness" not in quiet["systemd"]["timers"]
    assert "OnFailure" not in quiet["systemd"]["services"]["odbox-backup-hot"].get("unitConfig", {})


def test_offsite_without_a_repo_or_an_identity_fails_its_assertions():
    config = evaluate("{ odbox.backup = { enable = true; offsite.enable = true; }; }")
    assert failing(config) == [
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
    assert failing(config) == []


def test_cloud_login_needs_a_key_and_refuses_passwords():
    config = evaluate("{ odbox.login.enable = true; }")
    assert failing(config) == [
        "odbox.login needs at least one SSH key (rootKeys or adminKeys), "
        "or nobody can log in when the passwords are locked"
    ]
    config = evaluate('{ odbox.login = { enable = true; adminKeys = [ "ssh-ed25519 AAAA x" ]; }; }')
    assert config["services"]["openssh"]["settings"]["PasswordAuthentication"] is False
    assert config["users"]["users"]["admin"]["hashedPasswordFile"] is None


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


STACK = (
    '{ odbox.vault = { enable = true; backend = "snakeoil"; }; odbox.server-base.enable = true; '
    "odbox.backup.enable = true; %s }"
)


def test_the_service_stack_runs_odoo_behind_nginx_with_postgres_on_its_socket_only():
    config = evaluate(STACK % "", inline_files=True)
    assert failing(config) == []
    services = config["systemd"]["services"]
    odoo = services["odoo"]["serviceConfig"]
    assert odoo["User"] == "odoo" and odoo["ExecStart"].endswith(
        "/bin/odoo --config /run/odoo/odoo.conf"
    )
    assert services["odoo"]["requires"] == ["odbox-dbinit.service"]
    configure, initialize = odoo["ExecStartPre"]
    conf = re.search(r"«odoo.conf:\n(.*?)»", configure, re.S)
    assert conf, configure
    options = dict(line.split(" = ", 1) for line in conf.group(1).splitlines()[1:])
    assert options["proxy_mode"] == "True" and options["list_db"] == "False"
    assert options["workers"] == "2" and options["gevent_port"] == "8072"
    assert options["db_host"] == "/run/postgresql" and options["db_password"] == "False"
    assert options["dbfilter"] == "^odoo$" and options["http_interface"] == "127.0.0.1"
    assert options["addons_path"].endswith("-odoo-addons")
    # the admin password: from the vault at start, never in the store
    assert "admin_passwd" not in conf.group(1)
    assert "/run/odbox-vault/odoo-admin-password" in configure
    assert "printf 'admin_passwd = %s\\n'" in configure
    assert "--init base,odbox_health --stop-after-init --no-http" in initialize
    secrets = config["odbox"]["vault"]["secrets"]
    assert secrets["odoo-admin-password"]["owner"] == "odoo"
    assert secrets["tls-key"]["file"] == "certs/localhost-key.pem.age"
    assert secrets["pgadmin-password"]["owner"] == "pgadmin"

    dbinit = services["odbox-dbinit"]
    assert dbinit["serviceConfig"]["User"] == "postgres"
    assert dbinit["serviceConfig"]["ExecStart"].endswith("/bin/dbinit setup --lock-timeout 300")
    assert (
        dbinit["partOf"] == ["postgresql.service"] and dbinit["environment"]["ODBOX_DB"] == "odoo"
    )
    pgadmin = services["pgadmin"]
    assert pgadmin["serviceConfig"]["ExecStartPre"].endswith("/bin/pgadmin4-cli")
    assert "dbinit pgadmin-boot --pgadmin-cli" in pgadmin["serviceConfig"]["ExecStartPre"]
    assert pgadmin["environment"]["ODBOX_PGADMIN_EMAIL"] == "admin@localhost"
    assert config["systemd"]["timers"]["odoo-session-reaper"]["timerConfig"]["OnCalendar"] == [
        "*-*-* 03:30:00"
    ]
    assert "-mmin +10080 -delete" in services["odoo-session-reaper"]["serviceConfig"]["ExecStart"]

    postgres = config["services"]["postgresql"]
    assert postgres["enable"] is True and postgres["enableTCPIP"] is False
    assert postgres["settings"]["listen_addresses"] == ""
    assert "host all all 0.0.0.0/0 reject" in postgres["authentication"]
    # the backup module's root -> postgres map comes before the stack's plain peer line
    auth = postgres["authentication"]
    assert auth.index("map=odbox-backup") < auth.index("local all all peer")

    nginx = config["services"]["nginx"]
    assert nginx["clientMaxBodySize"] == "128m"
    host = nginx["virtualHosts"]["localhost"]
    assert host["forceSSL"] is True and host["enableACME"] is False
    assert host["sslCertificateKey"] == "/run/odbox-vault/tls-key"
    assert 'Strict-Transport-Security "max-age=63072000" always' in host["extraConfig"]
    assert host["locations"]["/"]["proxyPass"] == "http://127.0.0.1:8069"
    assert "deny all;" in host["locations"]["= /odbox/health"]["extraConfig"]
    assert host["locations"]["/websocket"] == {
        "proxyPass": "http://127.0.0.1:8072",
        "proxyWebsockets": True,
        "extraConfig": "proxy_read_timeout 3600s;",
        "return": None,
    }
    assert "X-Script-Name /pgadmin4" in host["locations"]["/pgadmin4/"]["extraConfig"]
    # psql of the server's own version for the admins, and dbinit for `dbinit check`
    packages = config["environment"]["systemPackages"]
    assert any(p.endswith("-postgresql_17") for p in packages)
    assert not any(p.endswith("-postgresql") for p in packages)
    assert any(p.endswith("-dbinit") for p in packages)
    # the backups stop and start this Odoo
    assert services["odbox-backup-cold"]["environment"]["ODBOX_ODOO_SERVICE"] == "odoo.service"


def test_bootstrap_mode_is_the_stack_without_odoo():
    config = evaluate(STACK % "odbox.service-stack.bootstrap-mode = true;")
    assert failing(config) == []
    services = config["systemd"]["services"]
    assert "odoo" not in services and "odoo-session-reaper" not in config["systemd"]["timers"]
    assert {"odbox-dbinit", "pgadmin"} <= services.keys()
    assert "odoo-admin-password" not in config["odbox"]["vault"]["secrets"]
    root = config["services"]["nginx"]["virtualHosts"]["localhost"]["locations"]
    assert root["/"]["return"].startswith('503 "Odoo Box is in bootstrap mode')
    assert "/websocket" not in root
    # nothing to stop or start around a cold backup or a restore
    assert "ODBOX_ODOO_SERVICE" not in services["odbox-backup-cold"]["environment"]
    assert config["users"]["users"]["odoo"]["isSystemUser"] is True  # owns the restored filestore


def test_autocerts_from_the_local_ca():
    config = evaluate(
        STACK % 'odbox.service-stack = { autocerts = true; domain = "odoo.test"; }; '
        "odbox.local-ca.enable = true;",
        inline_files=True,
    )
    assert failing(config) == [] and config["warnings"] == [
        "odbox.vault uses the snakeoil secrets: openly published test secrets, for the dev VM only"
    ]
    host = config["services"]["nginx"]["virtualHosts"]["odoo.test"]
    assert host["enableACME"] is True and host["sslCertificate"] == "/«unset»"
    secrets = config["odbox"]["vault"]["secrets"]
    assert "tls-key" not in secrets and secrets["local-ca-root-key"]["mode"] == "0400"
    acme = config["security"]["acme"]
    assert acme["defaults"]["server"] == "https://localhost:8443/acme/acme/directory"
    assert (
        "LEGO_CA_CERTIFICATES=/run/odbox-vault/local-ca-root-certificate"
        in (acme["defaults"]["environmentFile"])
    )
    step = config["services"]["step-ca"]
    assert step["address"] == "127.0.0.1" and step["port"] == 8443
    assert step["settings"]["authority"]["provisioners"] == [{"type": "ACME", "name": "acme"}]
    assert step["settings"]["authority"]["claims"]["defaultTLSCertDuration"] == "72h"
    intermediate = config["systemd"]["services"]["odbox-local-ca-intermediate"]
    assert intermediate["serviceConfig"]["Group"] == "step-ca"
    script = intermediate["serviceConfig"]["ExecStart"]
    assert "certificate create" in script and "--profile intermediate-ca" in script
    assert intermediate["requiredBy"] == ["step-ca.service"]
    assert config["systemd"]["services"]["step-ca"]["before"][0] == "acme-odoo.test.service"
    # the CA's port stays closed: the firewall is server-base's 22, 80, 443
    assert config["networking"]["firewall"]["allowedTCPPorts"] == [22, 80, 443]


def test_the_service_stack_refuses_what_would_leak_or_cannot_work():
    config = evaluate(
        "{ odbox.service-stack = { enable = true; autocerts = true; "
        'odoo.settings.admin_passwd = "x"; }; }'
    )
    assert failing(config) == [
        "odbox.service-stack reads the Odoo admin password, PgAdmin's password and the TLS "
        "certificate from the vault: enable odbox.vault",
        "odbox.service-stack.autocerts needs odbox.service-stack.acme.email",
        "odbox.service-stack.odoo.settings must not hold admin_passwd: it would land in the Nix "
        "store, readable by every user; give a secret's vault file to "
        "odbox.service-stack.odoo.secretSettings (the admin password comes from the vault already)",
    ]


def intermediate_group(config: dict[str, Any]) -> str:
    return str(
        config["systemd"]["services"]["odbox-local-ca-intermediate"]["serviceConfig"]["Group"]
    )


def test_the_backups_follow_a_renamed_odoo_database():
    config = evaluate(STACK % 'odbox.service-stack.odoo.db = "acme";')
    services = config["systemd"]["services"]
    assert services["odbox-dbinit"]["environment"]["ODBOX_DB"] == "acme"
    for unit in ("odbox-backup-hot", "odbox-backup-cold", "odbox-backup-restore@"):
        env = services[unit]["environment"]
        assert env["ODBOX_DB"] == "acme", unit
        assert env["ODBOX_FILESTORE"] == "/var/lib/odoo/data/filestore/acme", unit
    # a box that backs up another database still says so
    config = evaluate(STACK % 'odbox.backup.db = "other";')
    env = config["systemd"]["services"]["odbox-backup-hot"]["environment"]
    assert env["ODBOX_DB"] == "other"
    assert env["ODBOX_FILESTORE"] == "/var/lib/odoo/data/filestore/other"


@pytest.mark.parametrize(
    "key", ["smtp_password", "db_replica_password", "SMTP_PASSWORD", "api_secret", "oauth_token"]
)
def test_no_option_named_like_a_secret_reaches_the_store_through_odoo_settings(key):
    config = evaluate(STACK % f'odbox.service-stack.odoo.settings.{key} = "hunter2";')
    assert [m for m in failing(config) if key in m] == [
        f"odbox.service-stack.odoo.settings must not hold {key}: it would land in the Nix store, "
        "readable by every user; give a secret's vault file to "
        "odbox.service-stack.odoo.secretSettings (the admin password comes from the vault already)"
    ]


def test_a_secret_setting_comes_from_the_vault_at_start_and_restarts_odoo_when_it_changes():
    config = evaluate(
        STACK % 'odbox.service-stack.odoo.secretSettings.smtp_password = "passwords/smtp.txt.age";',
        inline_files=True,
    )
    assert failing(config) == []
    secret = config["odbox"]["vault"]["secrets"]["odoo-setting-smtp_password"]
    assert (secret["file"], secret["owner"], secret["mode"]) == (
        "passwords/smtp.txt.age", "odoo", "0400"
    )  # fmt: skip
    odoo = config["systemd"]["services"]["odoo"]
    configure = odoo["serviceConfig"]["ExecStartPre"][0]
    assert "head -n 1 /run/odbox-vault/odoo-setting-smtp_password" in configure
    assert 'printf \'%s = %s\\n\' smtp_password "$value" >> "$runtime.tmp"' in configure
    conf = re.search(r"«odoo.conf:\n(.*?)»", configure, re.S)
    assert conf and "smtp_password" not in conf.group(1)
    vault = config["odbox"]["vault"]["secrets"]
    triggers = odoo["restartTriggers"]
    assert vault["odoo-admin-password"]["fingerprint"] in triggers
    assert secret["fingerprint"] in triggers


def test_odoo_and_nginx_restart_when_the_vault_secrets_they_read_change(tmp_path):
    def triggers(text: str) -> tuple[list[Any], list[Any]]:
        (vault / "passwords" / "odoo-admin.txt.age").write_text(text)
        config = evaluate(
            f"{{ odbox.vault = {{ enable = true; source = {vault}; }}; "
            "odbox.server-base.enable = true; }"
        )
        services = config["systemd"]["services"]
        return services["odoo"]["restartTriggers"], services["nginx"]["restartTriggers"]

    vault = tmp_path / "vault"
    (vault / "passwords").mkdir(parents=True)
    (vault / "certs").mkdir()
    (vault / "certs" / "localhost-cert.pem.age").write_text("cert")
    (vault / "certs" / "localhost-key.pem.age").write_text("key")
    odoo_before, nginx_before = triggers("one")
    odoo_after, nginx_after = triggers("two")
    assert odoo_before != odoo_after and nginx_before == nginx_after
    (vault / "certs" / "localhost-key.pem.age").write_text("new key")
    assert triggers("two")[1] != nginx_after


def test_odoo_finds_postgresql_tools_of_the_servers_version_on_its_path():
    config = evaluate(STACK % "")
    assert config["systemd"]["services"]["odoo"]["path"] == [
        "/nix/store/00000000000000000000000000000000-postgresql_17"
    ]


def test_lego_waits_until_step_ca_answers():
    config = evaluate(
        STACK % 'odbox.service-stack = { autocerts = true; domain = "odoo.test"; }; '
        "odbox.local-ca.enable = true;",
        inline_files=True,
    )
    ready = config["systemd"]["services"]["odbox-local-ca-ready"]
    units = ["acme-odoo.test.service", "acme-order-renew-odoo.test.service"]
    assert ready["requiredBy"] == units and ready["before"] == units
    assert ready["after"] == ["step-ca.service"]
    script = ready["serviceConfig"]["ExecStart"]
    assert "https://localhost:8443/acme/acme/directory" in script
    assert "--cacert /run/odbox-vault/local-ca-root-certificate" in script


def evaluation_error(config: str, **more: str) -> str:
    """The error of an evaluation that must fail."""
    extra = "".join(f"{name} = {value}; " for name, value in more.items())
    expression = (
        f"import {HERE / 'eval-modules.nix'} {{ nixpkgsLib = {LIB}; config = {config}; {extra}}}"
    )
    result = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--expr", expression],
        capture_output=True, text=True, env=NIX_ENV,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout
    return result.stderr


# (a module file, what it says, the misspelling) for nginx, ACME, step-ca and openssh
TYPOS = [
    ("service-stack/module.nix", "forceSSL = true;", "forceSsl = true;"),
    ("service-stack/module.nix", "recommendedProxySettings = true;",
     "recommendedProxySetting = true;"),
    ("service-stack/module.nix", "proxyWebsockets = true;", "proxyWebSockets = true;"),
    ("service-stack/module.nix", "acceptTerms = true;", "acceptTerm = true;"),
    ("local-ca/module.nix", "intermediatePasswordFile =", "intermediatePassword ="),
    ("local-ca/module.nix", "security.acme.defaults.environmentFile",
     "security.acme.defaults.environmentFiles"),
    ("server-base/module.nix", "openFirewall = false;", "openFireWall = false;"),
    ("server-base/module.nix", 'PermitRootLogin = lib.mkDefault "prohibit-password";',
     'PermitRootLogin = lib.mkDefault "prohibit_password";'),
]  # fmt: skip


@pytest.mark.parametrize("file, right, wrong", TYPOS, ids=[t[2][:30] for t in TYPOS])
def test_a_misspelt_nixos_option_in_a_module_fails_the_evaluation(tmp_path, file, right, wrong):
    modules = tmp_path / "modules"
    shutil.copytree(ROOT / "nix" / "modules", modules)
    text = (modules / file).read_text()
    assert right in text
    (modules / file).write_text(text.replace(right, wrong, 1))
    config = (
        '{ odbox.vault = { enable = true; backend = "snakeoil"; }; odbox.server-base.enable = true;'
        ' odbox.service-stack = { autocerts = true; acme.email = "a@b.c"; };'
        " odbox.local-ca.enable = true; }"
    )
    error = evaluation_error(config, modules=str(modules))
    assert "does not exist" in error or "is not of type" in error or "not among" in error, error
    # and the same modules, spelt right, evaluate
    (modules / file).write_text(text)
    assert failing(evaluate(config, modules=str(modules))) == []


def snakeoil(tmp_path: Path) -> str:
    """A stand-in snakeoil-sec package: the one file a node reads from it."""
    package = tmp_path / "snakeoil-sec"
    (package / "ssh").mkdir(parents=True)
    (package / "ssh" / "id_ed25519.pub").write_text("ssh-ed25519 AAAAsnakeoil snakeoil\n")
    # a derivation in the eyes of types.package; toJSON shows its outPath
    fake = f'{{ type = "derivation"; name = "snakeoil-sec"; outPath = "{package}"; }}'
    return f"{{ snakeoil-sec = {fake}; }}"


NODES = sorted(p.name for p in (ROOT / "nix" / "nodes").iterdir() if (p / "default.nix").exists())


@pytest.mark.parametrize("boot", [False, True], ids=["full", "boot"])
@pytest.mark.parametrize("node", NODES)
def test_every_node_evaluates(tmp_path, node, boot):
    config = "{ odbox.service-stack.bootstrap-mode = true; }" if boot else "{ }"
    result = evaluate(config, node=str(ROOT / "nix" / "nodes" / node), packages=snakeoil(tmp_path))
    if node == "ec2":
        return  # imported by the two below; it sets no hostPlatform of its own
    problems = failing(result)
    if node.startswith("ec2-") and not (ROOT / "vault").exists():
        # what a fresh checkout says until `vaultgen generate` made vault/
        assert any(
            p.startswith(
                "the EC2 machines read the vault at the repository root: run `vaultgen generate`"
            )
            for p in problems
        ), problems
        assert all("vault" in p or "SSH key" in p for p in problems), problems  # fmt: skip
    else:
        assert problems == []
    assert result["system"]["stateVersion"] == "26.05"


def test_the_dev_vm_forwards_its_ports_on_the_hosts_loopback_only(tmp_path):
    config = evaluate("{ }", node=str(ROOT / "nix" / "nodes" / "devm-aarch64"),
                      packages=snakeoil(tmp_path))  # fmt: skip
    ports = config["virtualisation"]["vmVariant"]["virtualisation"]["forwardPorts"]
    assert {(p["host"]["port"], p["guest"]["port"]) for p in ports} == {(8443, 443), (2222, 22)}
    assert [p["host"]["address"] for p in ports] == ["127.0.0.1", "127.0.0.1"]
    assert config["users"]["users"]["admin"]["openssh"]["authorizedKeys"]["keys"] == [
        "ssh-ed25519 AAAAsnakeoil snakeoil"
    ]


def test_standard_login_on_ec2_lets_root_in_with_its_password():
    # amazon-image.nix sets PermitRootLogin = "prohibit-password" at normal priority.
    config = evaluate(
        '{ lib, ... }: { odbox.login.mode = lib.mkForce "standard"; }',
        node=str(ROOT / "nix" / "nodes" / "ec2-x86_64"),
    )
    settings = config["services"]["openssh"]["settings"]
    assert settings["PermitRootLogin"] == "yes" and settings["PasswordAuthentication"] is True
    # cloud mode agrees with amazon-image.nix, and a machine can still say no
    config = evaluate("{ }", node=str(ROOT / "nix" / "nodes" / "ec2-x86_64"))
    assert config["services"]["openssh"]["settings"]["PermitRootLogin"] == "prohibit-password"
    config = evaluate(
        '{ lib, ... }: { odbox.login.mode = lib.mkForce "standard";'
        ' services.openssh.settings.PermitRootLogin = lib.mkForce "no"; }',
        node=str(ROOT / "nix" / "nodes" / "ec2-x86_64"),
    )
    assert config["services"]["openssh"]["settings"]["PermitRootLogin"] == "no"


@pytest.mark.parametrize(
    "users, unit",
    [("systemd.sysusers.enable", "systemd-sysusers.service"),
     ("services.userborn.enable", "userborn.service")],
)  # fmt: skip
def test_the_vault_decrypts_in_units_around_sysusers_or_userborn(users, unit):
    config = evaluate(
        f'{{ {users} = true; odbox.vault = {{ enable = true; backend = "snakeoil"; }}; '
        'odbox.login = { enable = true; mode = "standard"; adminKeys = [ "ssh-ed25519 A" ]; }; }',
        inline_files=True,
    )
    assert failing(config) == []  # nixpkgs wants system.activationScripts.users empty then
    assert config["system"]["activationScripts"]["users"] == ""
    assert "odbox-vault-decrypt" not in config["system"]["activationScripts"]
    services = config["systemd"]["services"]
    decrypt, owners = services["odbox-vault-decrypt"], services["odbox-vault-owners"]
    # before the users are made (userborn reads the password hashes), owners after
    assert decrypt["before"] == ["sysinit.target", unit] and decrypt["wantedBy"] == [
        "sysinit.target"
    ]
    assert owners["before"] == ["sysinit.target"]
    assert decrypt["unitConfig"]["DefaultDependencies"] is False
    assert owners["after"] == [unit, "odbox-vault-decrypt.service"]
    assert "/run/odbox-vault/root-password-hash" in decrypt["serviceConfig"]["ExecStart"]
    assert (
        "chown root:root /run/odbox-vault/root-password-hash"
        in (owners["serviceConfig"]["ExecStart"])
    )


def test_secrets_no_longer_configured_are_removed_from_the_ramfs(tmp_path):
    config = evaluate(
        '{ odbox.vault = { enable = true; backend = "snakeoil"; '
        'secrets.kept = { file = "passwords/kept.txt.age"; }; }; }'
    )
    text = config["system"]["activationScripts"]["odbox-vault-decrypt"]["text"]
    prune = re.search(r"^\s*for file in /run/odbox-vault/\*.*?^\s*done$", text, re.S | re.M)
    assert prune, text
    ramfs = tmp_path / "odbox-vault"
    ramfs.mkdir()
    for name in ("kept", "gone", ".hidden", "kept.tmp"):
        (ramfs / name).write_text("secret")
    (ramfs / "folder").mkdir()
    script = prune.group(0).replace("/run/odbox-vault", str(ramfs))
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert sorted(p.name for p in ramfs.iterdir()) == ["kept"]
    assert "odbox-vault: removed gone, no longer configured" in result.stderr


def test_the_flake_builds_the_dev_vm_runner_for_the_machine_that_runs_it():
    packages = evaluate_json(f"import {HERE / 'flake-packages.nix'} {{ nixpkgsLib = {LIB}; }}")
    # no x86_64-darwin: cryptography has no wheel there (test_uv2nix.py)
    assert set(packages) == {"x86_64-linux", "aarch64-linux", "aarch64-darwin"}
    for system, outputs in packages.items():
        # QEMU and the start script of this machine; the guest stays aarch64-linux
        assert outputs["devm-vm"] == f"vm whose runner is {system}'s"
        # the guest's own snakeoil secrets (new ones in each build): the key that logs in
        assert outputs["snakeoil-sec"] == "aarch64-linux:snakeoil-sec"
        assert outputs["vaultgen"] == f"{system}:vaultgen"
    assert "odoo-addons" not in packages["aarch64-darwin"]
    assert "dbinit" not in packages["aarch64-darwin"]


DEPLOY = STACK % (
    'odbox.deploy.enable = true; odbox.backup.identityFile = "/run/odbox-vault/backup-identity";'
)


def test_the_deploy_unit_runs_before_odoo_keyed_by_the_code_and_rolls_back_a_generation():
    config = evaluate(DEPLOY, inline_files=True)
    assert failing(config) == []
    services = config["systemd"]["services"]
    deploy = services["odbox-deploy"]
    # before Odoo starts on new code, which requires it: a failed deploy never serves
    assert deploy["before"] == ["odoo.service"] and deploy["requiredBy"] == ["odoo.service"]
    assert deploy["serviceConfig"]["Type"] == "oneshot"
    # keyed by the store paths of Odoo and the addons: a switch that changes them restarts it
    assert any(str(t).endswith("-odoo") for t in deploy["restartTriggers"])
    assert any(str(t).endswith("-odoo-addons") for t in deploy["restartTriggers"])
    apply = deploy["serviceConfig"]["ExecStart"]
    assert "/bin/odbox-deploy apply" in apply and "stop odbox-deploy-probe.service" in apply
    env = deploy["environment"]
    assert env["ODBOX_ODOO_START"].endswith("systemctl start odbox-deploy-probe.service")
    assert env["ODBOX_DEPLOY_HEALTH_URL"] == "http://127.0.0.1:8069/odbox/health"
    assert env["ODBOX_ODOO_CONF"].startswith("/«odoo.conf:")  # the store conf
    assert env["ODBOX_BACKUP_IDENTITY"] == "/run/odbox-vault/backup-identity"
    assert "nix-env -p /nix/var/nix/profiles/system --rollback" in env["ODBOX_DEPLOY_ROLLBACK"]
    assert "systemd-run --no-block" in env["ODBOX_DEPLOY_ROLLBACK"]
    # the probe is Odoo's own unit, and a new box records its first checksums after initialize
    odoo, probe = services["odoo"]["serviceConfig"], services["odbox-deploy-probe"]["serviceConfig"]
    assert probe["ExecStart"] == odoo["ExecStart"] and probe["User"] == "odoo"
    assert "odbox-deploy record" in odoo["ExecStartPre"][-1]
    assert odoo["ExecStartPre"][-1].startswith("+")
    without = evaluate(
        DEPLOY.replace(
            "odbox.deploy.enable = true;",
            'odbox.deploy.rollback = "none"; odbox.deploy.enable = true;',
        )
    )
    assert (
        "ODBOX_DEPLOY_ROLLBACK" not in without["systemd"]["services"]["odbox-deploy"]["environment"]
    )


def test_the_deploy_refuses_a_box_without_backups_or_the_identity_to_restore():
    config = evaluate(
        STACK.replace("odbox.backup.enable = true;", "") % "odbox.deploy.enable = true;"
    )
    problems = failing(config)
    assert any("enable odbox.backup" in p for p in problems)
    assert any("odbox.backup.identityFile" in p for p in problems)


def test_the_dev_vm_restores_a_neutralized_staging_copy_in_one_command(tmp_path):
    config = evaluate("{ }", node=str(ROOT / "nix" / "nodes" / "devm-aarch64"),
                      packages=snakeoil(tmp_path))  # fmt: skip
    assert failing(config) == []
    unit = config["systemd"]["services"]["odbox-restore-staging@"]
    assert unit["serviceConfig"]["ExecStart"].endswith("/bin/odbox-backup restore %i --neutralize")
    env = unit["environment"]
    assert env["ODBOX_NEUTRALIZE_COMMAND"].endswith("/bin/odbox-deploy neutralize")
    assert env["ODBOX_ODOO_USER"] == "odoo" and env["ODBOX_ODOO_SERVICE"] == "odoo.service"
    assert env["ODBOX_BACKUP_REPO"] == "/var/lib/odbox-backups"
