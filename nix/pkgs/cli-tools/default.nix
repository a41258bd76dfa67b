# Two tool sets: `admin` for a box (and os-base's extras), `dev` for working on
# this repository from a laptop or the dev shell.
{ lib, pkgs, odbox }:
{
  admin = pkgs.buildEnv {
    name = "odbox-admin-tools";
    paths = with pkgs; [
      age curl htop jq lsof ripgrep tmux tree
      postgresql zstd
      odbox.dbinit odbox.odbox-backup odbox.vaultgen
    ];
    meta.description = "Tools to look after an Odoo Box server";
  };
  dev = pkgs.buildEnv {
    name = "odbox-dev-tools";
    paths = with pkgs; [
      git just uv
      age openssl openssh
      postgresql zstd restic
      awscli2 kubectl
      nixfmt shellcheck
      odbox.vaultgen odbox.dbinit odbox.odbox-backup odbox.k8s-migrate odbox.ec2-install
    ];
    meta.description = "Tools to work on Odoo Box: the five tools, the interop programs the tests run, and the cloud CLIs";
  };
}
