"""Deeper, local only: the modules evaluated with nixpkgs' real lib.evalModules.

Fetch nix-community/nixpkgs.lib (never commit it) and point NIXPKGS_LIB at its
lib/ folder; CI has no copy, so there this file is skipped and test_nix.py's
checks (parse, options, tool calls) are what runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.nix.test_nix import HERE, evaluate_json

LIB = os.environ.get("NIXPKGS_LIB")
pytestmark = pytest.mark.skipif(
    not LIB or not (Path(LIB) / "default.nix").exists(),
    reason="NIXPKGS_LIB is not set to a nixpkgs lib/ folder (fetch nix-community/nixpkgs.lib)",
)


def evaluate(config: str, inline_files: bool = False) -> dict[str, Any]:
    """The configuration the modules make; with inline_files, generated files appear as their
    text («name: …») where their store path would be."""
    inline = "true" if inline_files else "false"
    expression = (
        f"import {HERE / 'eval-modules.nix'} "
        f"{{ nixpkgsLib = {LIB}; config = {config}; inlineFiles = {inline}; }}"
    )
    return dict(evaluate_json(expression))


def failing(config: dict[str, Any]) -> list[str]:
    """The messages of the assertions that do not hold."""
    return [a["message"] for a in config["assertions"] if not a["assertion"]]


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
        dbinit["partOf"] == ["postgresql.service"]
        and dbinit["environment"]["ODBOX_ODOO_DB"] == "odoo"
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
    assert host["enableACME"] is True and "sslCertificate" not in host
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
    assert services["odbox-dbinit"]["environment"]["ODBOX_ODOO_DB"] == "acme"
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
    assert "printf '%s = %s\\n' smtp_password \"$value\" >> /run/odoo/odoo.conf.tmp" in configure
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
