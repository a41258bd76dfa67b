{ config, lib, pkgs, ... }:
let
  cfg = config.odbox.deploy;
  stack = config.odbox.service-stack;
  backup = config.odbox.backup;
  odoo = stack.odoo;
  systemctl = "${config.systemd.package}/bin/systemctl";
  # The code a deploy is keyed by: a change of any of these store paths changes the unit, so a
  # switch restarts it, before odoo.service starts on the new code.
  code = [ odoo.package ] ++ odoo.addons;
  # As `nixos-rebuild switch --rollback`: the profile one generation back, then a switch to it,
  # queued (systemd-run) because the switch restarts this very unit.
  generationRollback = pkgs.writeShellScript "odbox-deploy-rollback" ''
    set -eu
    exec ${config.systemd.package}/bin/systemd-run --no-block --collect --unit odbox-deploy-rollback \
      ${pkgs.bash}/bin/bash -c '${config.nix.package or pkgs.nix}/bin/nix-env -p /nix/var/nix/profiles/system --rollback && exec /nix/var/nix/profiles/system/bin/switch-to-configuration switch'
  '';
  rollbackCommand =
    if cfg.rollbackCommand != null then cfg.rollbackCommand
    else if cfg.rollback == "generation" then "${generationRollback}"
    else null;
  # The deploy's Odoo: the odoo unit's own start scripts in a unit of its own, started and
  # health-checked by `apply` while odoo.service waits for the deploy (it is ordered after it).
  probe = "odbox-deploy-probe.service";
  apply = pkgs.writeShellScript "odbox-deploy-apply" ''
    set -u
    ODBOX_ODOO_ROOT=$(echo ${odoo.package}/lib/python3*/site-packages/odoo)
    export ODBOX_ODOO_ROOT
    ${cfg.package}/bin/odbox-deploy apply
    status=$?
    ${systemctl} stop ${probe}
    exit $status
  '';
  environment = neutralizing // {
    ODBOX_DB = odoo.db;
    ODBOX_DSN = backup.dsn;
    ODBOX_FILESTORE = backup.filestore;
    ODBOX_BACKUP_REPO = backup.repo;
    ODBOX_PG_BIN = "${config.services.postgresql.package}/bin";
    ODBOX_ODOO_STOP = "${systemctl} stop ${probe}";
    ODBOX_ODOO_START = "${systemctl} start ${probe}";
    ODBOX_DEPLOY_BACKUP = "${backup.package}/bin/odbox-backup";
    ODBOX_DEPLOY_HEALTH_URL = "http://127.0.0.1:${toString odoo.httpPort}/odbox/health";
  } // lib.optionalAttrs (rollbackCommand != null) {
    ODBOX_DEPLOY_ROLLBACK = rollbackCommand;
  } // lib.optionalAttrs (backup.identityFile != null) {
    ODBOX_BACKUP_IDENTITY = backup.identityFile;
  } // lib.optionalAttrs (backup.authKeyFile != null) {
    ODBOX_BACKUP_AUTH_KEY_FILE = backup.authKeyFile;
  };
  # `record` in the odoo unit, with the deploy unit's environment
  record = pkgs.writeShellScript "odbox-deploy-record" ''
    set -eu
    ODBOX_ODOO_ROOT=$(echo ${odoo.package}/lib/python3*/site-packages/odoo)
    export ODBOX_ODOO_ROOT
    ${lib.concatStrings (lib.mapAttrsToList (k: v: "export ${k}=${lib.escapeShellArg v}\n")
      environment)}
    exec ${cfg.package}/bin/odbox-deploy record
  '';
  # What `odbox-backup restore --neutralize` needs to run `odbox-deploy neutralize`.
  neutralizing = {
    ODBOX_NEUTRALIZE_COMMAND = "${cfg.package}/bin/odbox-deploy neutralize";
    ODBOX_ODOO_CONF = "${stack.odoo.confFile}";
    ODBOX_ODOO_BIN = "${odoo.package}/bin/odoo";
    ODBOX_ODOO_USER = "odoo";
    ODBOX_DEPLOY_STATE = cfg.stateDir;
  };
in
{
  config = lib.mkMerge [ (lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = stack.enable && !stack.bootstrap-mode;
        message = "odbox.deploy updates the service stack's Odoo: enable odbox.service-stack (not in bootstrap-mode)";
      }
      {
        assertion = backup.enable;
        message = "odbox.deploy takes its pre-deploy snapshot in odbox.backup's repository: enable odbox.backup";
      }
      {
        # the rollback restores the snapshot: an encrypted repository needs the identity
        assertion = backup.identityFile != null;
        message = "odbox.deploy restores the pre-deploy snapshot on a failure: set odbox.backup.identityFile (an age identity file; for an unencrypted repository any one, made with age-keygen)";
      }
    ];
    environment.systemPackages = [ cfg.package ];

    systemd.services.odbox-deploy = {
      description = "Odoo Box deploy: update the changed modules before Odoo starts on new code";
      requiredBy = [ "odoo.service" ];
      before = [ "odoo.service" ];
      after = [ "odbox-dbinit.service" "postgresql.service" "postgresql.target" ];
      requires = [ "odbox-dbinit.service" ];
      restartTriggers = code;
      path = [ config.systemd.package ];
      inherit environment;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${apply}";
        StateDirectory = "odbox-deploy";
        StateDirectoryMode = "0700";
        CacheDirectory = "odbox-backup";
        TimeoutStartSec = "2h"; # a snapshot, -u all of a large database, a restore
      };
    };

    # A new box: odoo-initialize (the odoo unit's ExecStartPre) has just installed the modules
    # with the code on disk; record its checksums then, so the next change is a deploy.
    systemd.services.odoo.serviceConfig.ExecStartPre = lib.mkAfter [ "+${record}" ];

    # odoo.service's own ExecStartPre and ExecStart, for the deploy's start and health check.
    systemd.services.odbox-deploy-probe = {
      description = "Odoo, started by odbox-deploy to check an update before odoo.service takes over";
      inherit (config.systemd.services.odoo) path;
      serviceConfig = {
        inherit (config.systemd.services.odoo.serviceConfig)
          User Group RuntimeDirectory RuntimeDirectoryMode WorkingDirectory ExecStartPre ExecStart;
        TimeoutStopSec = 90;
      };
    };
  }) (lib.mkIf cfg.staging.enable {
    assertions = [{
      assertion = stack.enable && backup.enable;
      message = "odbox.deploy.staging restores with odbox-backup into the service stack's Odoo: enable odbox.service-stack and odbox.backup";
    }];
    # `systemctl start odbox-restore-staging@latest` (or @SNAPSHOT-ID): a neutralized copy.
    systemd.services."odbox-restore-staging@" = {
      description = "Odoo Box staging copy: snapshot %i of ${cfg.staging.repo}, neutralized";
      after = [ "postgresql.service" "postgresql.target" "network-online.target" ];
      wants = [ "network-online.target" ];
      path = [ config.systemd.package ];
      environment = neutralizing // {
        ODBOX_BACKUP_REPO = cfg.staging.repo;
        ODBOX_DB = odoo.db;
        ODBOX_FILESTORE = backup.filestore;
        ODBOX_DSN = backup.dsn;
        ODBOX_PG_BIN = "${config.services.postgresql.package}/bin";
        ODBOX_ODOO_SERVICE = "odoo.service";
      } // lib.optionalAttrs (backup.identityFile != null) {
        ODBOX_BACKUP_IDENTITY = backup.identityFile;
      };
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${backup.package}/bin/odbox-backup restore %i --neutralize";
        StateDirectory = "odbox-deploy";
        StateDirectoryMode = "0700";
        EnvironmentFile = lib.mkIf (cfg.staging.environmentFile != null) cfg.staging.environmentFile;
      };
    };
  }) ];
}
