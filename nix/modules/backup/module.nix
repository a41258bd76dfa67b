{ config, lib, pkgs, ... }:
let
  cfg = config.odbox.backup;
  bin = "${cfg.package}/bin/odbox-backup";
  # Everything the commands share, as odbox-backup's own ODBOX_* variables: the
  # units' command lines stay short and name only what differs. No secrets here.
  environment = {
    ODBOX_BACKUP_REPO = cfg.repo;
    ODBOX_DB = cfg.db;
    ODBOX_FILESTORE = cfg.filestore;
    ODBOX_DSN = cfg.dsn;
    ODBOX_PG_BIN = "${config.services.postgresql.package}/bin";
    # prune's policy (read by prune only), as its --keep-* would give it.
    ODBOX_BACKUP_KEEP_DAILY = toString cfg.keep.daily;
    ODBOX_BACKUP_KEEP_WEEKLY = toString cfg.keep.weekly;
    ODBOX_BACKUP_KEEP_MONTHLY = toString cfg.keep.monthly;
  } // lib.optionalAttrs (cfg.odooService != "") {
    ODBOX_ODOO_SERVICE = cfg.odooService;
  } // lib.optionalAttrs (cfg.identityFile != null) {
    ODBOX_BACKUP_IDENTITY = cfg.identityFile;
  } // lib.optionalAttrs (cfg.authKeyFile != null) {
    ODBOX_BACKUP_AUTH_KEY_FILE = cfg.authKeyFile;
  } // lib.optionalAttrs (cfg.metricsFile != null) {
    ODBOX_BACKUP_METRICS_FILE = cfg.metricsFile;
  };
  # OnFailure= of every timed unit: odbox-backup notify, by mail and/or webhook.
  notifying = cfg.notify.mailTo != [ ] || cfg.notify.webhookUrlFile != null;
  notifyArgs = lib.concatMapStrings (to: " --mail-to ${lib.escapeShellArg to}") cfg.notify.mailTo
    + lib.optionalString (cfg.notify.mailTo != [ ]) " --sendmail ${lib.escapeShellArg cfg.notify.sendmail}"
    + lib.optionalString (cfg.notify.mailFrom != null) " --mail-from ${lib.escapeShellArg cfg.notify.mailFrom}"
    + lib.optionalString (cfg.notify.webhookUrlFile != null) " --webhook-url-file ${lib.escapeShellArg cfg.notify.webhookUrlFile}";
  onFailure = lib.optionalAttrs notifying { OnFailure = "odbox-backup-notify@%n.service"; };
  prune = "${bin} prune";  # its --keep-* and --wait: ODBOX_BACKUP_KEEP_*, ODBOX_BACKUP_WAIT
  # --wait 3600, for the units that wait for the lock (restore@ does not: it says at once).
  waiting = { environment.ODBOX_BACKUP_WAIT = "3600"; };
  # Pruning reads the kept manifests: without an identity an encrypted repository
  # cannot be pruned on the box, and a failing prune would mark every backup failed.
  pruneAfter = cfg.keep.afterBackup && cfg.identityFile != null;
  unit = description: extra: lib.recursiveUpdate {
    inherit description environment;
    after = [ "postgresql.service" "postgresql.target" "network-online.target" ]
      ++ lib.optional cfg.mountBackupDisk "backup.mount";
    # nofail lets the box boot without the disk; a backup must then fail, not fill /.
    unitConfig = lib.optionalAttrs cfg.mountBackupDisk { RequiresMountsFor = "/backup"; } // onFailure;
    wants = [ "network-online.target" ];
    path = [ config.systemd.package ];
    serviceConfig = {
      Type = "oneshot";
      CacheDirectory = "odbox-backup";
    };
  } extra;
  timer = calendars: {
    wantedBy = [ "timers.target" ];
    timerConfig = {
      OnCalendar = calendars;
      Persistent = true;
      RandomizedDelaySec = "5m";
    };
  };
in
{
  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = [
        {
          assertion = !cfg.offsite.enable || cfg.offsite.repo != "";
          message = "odbox.backup.offsite.enable needs odbox.backup.offsite.repo";
        }
        {
          # copy reads each object of the source to encode it for the destination
          assertion = !cfg.offsite.enable || cfg.identityFile != null;
          message = "odbox.backup.offsite.enable needs odbox.backup.identityFile to read the local repository";
        }
      ];
      environment.systemPackages = [ cfg.package ];
      # The vault's authentication key, when authKeyFile is where the vault puts it (its
      # default when the vault holds backup-auth.key.age): root's only.
      odbox.vault.secrets.backup-auth-key = lib.mkIf (cfg.authKeyFile == "/run/odbox-vault/backup-auth-key") {
        file = "backup-auth.key.age";
      };

      # root runs the backups; peer auth lets it in as postgres and nothing else.
      services.postgresql.identMap = ''
        odbox-backup root postgres
        odbox-backup postgres postgres
      '';
      services.postgresql.authentication = lib.mkBefore ''
        local all postgres peer map=odbox-backup
      '';

      systemd.services.odbox-backup-hot = unit "Odoo Box hot backup (Odoo keeps running)" (waiting // {
        # --wait: a hot and a cold run that meet take turns instead of failing with exit 4.
        serviceConfig.ExecStart = "${bin} run --hot";
        serviceConfig.ExecStartPost = lib.mkIf pruneAfter prune;
      });
      systemd.services.odbox-backup-cold = unit "Odoo Box cold backup (Odoo stopped, then started again)" (waiting // {
        serviceConfig.ExecStart = "${bin} run --cold";
        serviceConfig.ExecStartPost = lib.mkIf pruneAfter prune;
      });
      # Never started by a timer or at boot: `systemctl start odbox-backup-restore@latest`
      # (or @SNAPSHOT-ID). It restores into a new database and folder, verifies, and
      # only then swaps them in, keeping the old ones (odbox-backup drop-previous).
      systemd.services."odbox-backup-restore@" = unit "Odoo Box restore of snapshot %i" {
        serviceConfig.ExecStart = "${bin} restore %i";
      };
      systemd.timers.odbox-backup-hot = lib.mkIf (cfg.hot != [ ]) (timer cfg.hot);
      # Whether backups still happen, whatever failed silently (a stopped timer, a full disk
      # that made no unit fail, a copy that stopped): the newest snapshot's age.
      systemd.services.odbox-backup-staleness = lib.mkIf (cfg.staleness.maxAge != null) (unit "Odoo Box check that backups are recent" {
        serviceConfig.ExecStart = [ "${bin} status --max-age ${lib.escapeShellArg cfg.staleness.maxAge}" ]
          ++ lib.optional cfg.offsite.enable "${bin} status --repo ${lib.escapeShellArg cfg.offsite.repo} --max-age ${lib.escapeShellArg cfg.staleness.maxAge}";
        serviceConfig.EnvironmentFile = lib.mkIf (cfg.offsite.enable && cfg.offsite.environmentFile != null) cfg.offsite.environmentFile;
      });
      systemd.timers.odbox-backup-staleness = lib.mkIf (cfg.staleness.maxAge != null && cfg.staleness.at != [ ]) (timer cfg.staleness.at);
      systemd.timers.odbox-backup-cold = lib.mkIf (cfg.cold != [ ]) (timer cfg.cold);
    }
    (lib.mkIf notifying {
      # Started by OnFailure= with the failed unit's name; it has no OnFailure= of its own.
      systemd.services."odbox-backup-notify@" = {
        description = "Odoo Box: tell the admins that %i failed";
        after = [ "network-online.target" ];
        wants = [ "network-online.target" ];
        path = [ config.systemd.package ];
        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${bin} notify %i${notifyArgs}";
        };
      };
    })
    (lib.mkIf cfg.mountBackupDisk {
      fileSystems."/backup" = {
        device = "/dev/disk/by-partlabel/backup";
        fsType = "ext4";
        options = [ "nofail" "noatime" ];
      };
    })
    (lib.mkIf cfg.offsite.enable {
      systemd.services.odbox-backup-offsite = unit "Odoo Box offsite copy to ${cfg.offsite.repo}" (waiting // {
        # `all`: every snapshot the offsite repository lacks (the others are skipped).
        serviceConfig.ExecStart = "${bin} copy all --to ${lib.escapeShellArg cfg.offsite.repo}"
          + lib.optionalString (cfg.offsite.limitUpload != null) " --limit-upload ${toString cfg.offsite.limitUpload}";
        serviceConfig.EnvironmentFile = lib.mkIf (cfg.offsite.environmentFile != null) cfg.offsite.environmentFile;
      });
      systemd.timers.odbox-backup-offsite = timer cfg.offsite.at;
    })
  ]);
}
