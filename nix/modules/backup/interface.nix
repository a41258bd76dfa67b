{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  # The vault's copy of the authentication key (`vaultgen generate` makes backup-auth.key),
  # when the vault has one: the box then signs with the key the admin restores with elsewhere.
  # Not with snakeoil, whose published key is no secret.
  vault = config.odbox.vault;
  vaultKey = vault.enable && vault.backend != "snakeoil" && vault.source != null
    && builtins.pathExists "${toString vault.source}/backup-auth.key.age";
  calendars = what: default: mkOption {
    type = types.listOf types.str;
    inherit default;
    description = "systemd calendar specs (man systemd.time) of the ${what}; empty for none.";
  };
in
{
  options.odbox.backup = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "Timed odbox-backup snapshots of the Odoo database and filestore, a restore unit, and an optional offsite copy.";
    };
    package = mkOption {
      type = types.package;
      default = pkgs.odbox-backup;
      defaultText = lib.literalExpression "pkgs.odbox-backup";
      description = "The odbox-backup package (from this flake's overlay).";
    };
    repo = mkOption {
      type = types.str;
      default = "/backup/odbox";
      description = "The repository: a folder (default: on the backup disk) or s3://bucket/prefix.";
    };
    mountBackupDisk = mkOption {
      type = types.bool;
      default = false;
      description = "Mount the partition labelled `backup` (made by ec2-install's first boot) on /backup.";
    };
    db = mkOption {
      type = types.str;
      default = config.odbox.service-stack.odoo.db;
      defaultText = lib.literalExpression "config.odbox.service-stack.odoo.db";
      description = "Odoo's database: the service stack's, unless the backups are of another.";
    };
    filestore = mkOption {
      type = types.str;
      default = "/var/lib/odoo/data/filestore/${config.odbox.backup.db}";
      defaultText = lib.literalExpression ''"/var/lib/odoo/data/filestore/''${config.odbox.backup.db}"'';
      description = "Odoo's filestore folder for that database (the service stack's data_dir holds one per database).";
    };
    odooService = mkOption {
      type = types.str;
      default = "odoo.service";
      description = "The unit a cold backup and a restore stop, and start again even when they fail; empty for none (service-stack's bootstrap-mode has no Odoo).";
    };
    dsn = mkOption {
      type = types.str;
      default = "host=/run/postgresql user=postgres dbname=postgres";
      description = "libpq connection string; the default reaches the local server as postgres over its socket (the module maps root to postgres for peer auth).";
    };
    identityFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "age identity or SSH key that reads an encrypted repository, for restore, prune and copy (a path outside the Nix store, e.g. the vault's tmpfs). No default: the box usually only encrypts to keys it does not hold.";
    };
    authKeyFile = mkOption {
      type = types.nullOr types.str;
      default = if vaultKey then "/run/odbox-vault/backup-auth-key" else "/var/lib/odbox/backup-auth.key";
      defaultText = lib.literalMD "the vault's `backup-auth.key.age`, decrypted to /run/odbox-vault/backup-auth-key, when `odbox.vault.source` has it (age or agenix backend); else /var/lib/odbox/backup-auth.key";
      description = "odbox-backup's authentication key: every command on a version 3 repository needs it, the box to sign what it writes and to check what it dedups against. `vaultgen generate` makes one in the vault (the module then decrypts it, root-only, and uses it: the admin holds the same key); else `odbox-backup init` writes it at /var/lib/odbox/backup-auth.key (0600) when it is missing, and the admin must copy it off the box. A secret: a path outside the Nix store, never in the repository. null: only repositories of format 1 and 2.";
    };
    hot = calendars "hot backups (Odoo keeps running)" [ "*-*-* 02:00:00" ];
    cold = calendars "cold backups (Odoo stopped, then started again whatever happens)" [ ];
    keep = {
      afterBackup = mkOption {
        type = types.bool;
        default = true;
        description = "Prune after each backup with the keep.* counts. Pruning reads the kept manifests, so it runs only when identityFile is set.";
      };
      daily = mkOption {
        type = types.ints.unsigned;
        default = 7;
        description = "After each backup, keep the newest snapshot of each of the last N days.";
      };
      weekly = mkOption {
        type = types.ints.unsigned;
        default = 4;
        description = "… of each of the last N weeks.";
      };
      monthly = mkOption {
        type = types.ints.unsigned;
        default = 12;
        description = "… of each of the last N months.";
      };
    };
    metricsFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/prometheus-node-exporter-text-files/odbox-backup.prom";
      description = "Where run, verify, prune and copy write node_exporter textfile metrics (last success and failure time, duration, bytes added, snapshot count), failed or not: a file in the folder node_exporter's textfile collector reads. null: none.";
    };
    notify = {
      mailTo = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "admin@example.com" ];
        description = "Mail these addresses, through `sendmail`, when a backup, copy, prune or staleness check fails (OnFailure=).";
      };
      mailFrom = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "The sender of those mails; null: sendmail's default.";
      };
      sendmail = mkOption {
        type = types.str;
        default = "/run/wrappers/bin/sendmail";
        description = "The sendmail program (a mail transfer agent such as msmtp or postfix provides it).";
      };
      webhookUrlFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/odbox-vault/backup-webhook-url";
        description = "A file holding the URL to POST a JSON message to (`text`, `unit`, `host`, `time`: Slack, Mattermost and ntfy read it) when a unit fails. A secret (webhook URLs carry their token): a path outside the Nix store; the URL is never put on a command line or in the environment.";
      };
    };
    staleness = {
      maxAge = mkOption {
        type = types.nullOr types.str;
        default = "26h";
        description = "Check on a timer that the newest snapshot (of the repository, and of the offsite one when enabled) is younger than this (`odbox-backup status --max-age`); the check fails, and notifies, when it is not. null: no check.";
      };
      at = calendars "staleness checks" [ "*-*-* 09:00:00" ];
    };
    offsite = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = "Copy new snapshots to a second repository (usually S3) on a timer.";
      };
      repo = mkOption {
        type = types.str;
        default = "";
        example = "s3://acme-backups/odoo-box";
        description = "The offsite repository; it must exist (odbox-backup init). Required when offsite.enable.";
      };
      at = calendars "offsite copies" [ "*-*-* 04:00:00" ];
      limitUpload = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        example = 512;
        description = "Send the offsite repository at most this many KiB a second (`copy --limit-upload`), so a small office line stays usable. null: no limit.";
      };
      environmentFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "File of AWS_* variables (credentials, AWS_REGION) for the copy, kept outside the Nix store. No default: on EC2 the instance role can provide them.";
      };
    };
  };
}
