{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.odbox.deploy = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "Run `odbox-deploy apply` before Odoo starts on new code: the modules whose files changed are updated behind a pre-deploy snapshot (odbox.backup's repository), and a failing update is rolled back (the snapshot restored, the code brought back).";
    };
    package = mkOption {
      type = types.package;
      default = pkgs.odbox-deploy;
      defaultText = lib.literalExpression "pkgs.odbox-deploy";
      description = "The odbox-deploy package (from this flake's overlay).";
    };
    rollback = mkOption {
      type = types.enum [ "generation" "none" ];
      default = "generation";
      description = "What brings the previous code back after a failed update: `generation` switches the system to its previous generation (as `nixos-rebuild switch --rollback`, queued with systemd-run so it runs after the deploy unit ends); `none` restores the data only and leaves Odoo stopped on the new code (the odoo unit requires the deploy).";
    };
    rollbackCommand = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "A command of your own instead of `rollback` (run before Odoo is started again; it must be safe to run twice).";
    };
    healthTimeout = mkOption {
      type = types.ints.positive;
      default = 600;
      description = "Seconds Odoo's /odbox/health may take to pass after the update before the deploy rolls back.";
    };
    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/odbox-deploy";
      description = "The deploy's journal, last.json and the update logs (0700, root's).";
    };
    staging = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = "A staging copy of production in one command: the unit odbox-restore-staging@ (`systemctl start odbox-restore-staging@latest`) restores a snapshot of staging.repo with `odbox-backup restore --neutralize`: Odoo's own neutralization (mail servers and crons off) runs on the restored database before Odoo starts on it. For the dev VM, never production (odbox.deploy.enable is not needed).";
      };
      repo = mkOption {
        type = types.str;
        default = config.odbox.backup.repo;
        defaultText = lib.literalExpression "config.odbox.backup.repo";
        example = "s3://acme-backups/odoo-box";
        description = "The repository of production's snapshots (its credentials, for S3, in staging.environmentFile).";
      };
      environmentFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "A file of AWS_* variables (outside the Nix store) to read staging.repo on S3.";
      };
    };
  };
}
