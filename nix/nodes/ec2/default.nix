# What both EC2 machines share: the Amazon image support, the vault of this
# repository (vault/ at its root, .age files only), cloud login, backups on the
# backup disk ec2-install's first boot formatted.
{ lib, modulesPath, ... }:
let
  vault = ../../../vault;
  # vaultgen's convenience SSH identity, public half: committed with the vault.
  vaultKey = vault + "/ssh/id_ed25519.pub";
in
{
  imports = [ "${modulesPath}/virtualisation/amazon-image.nix" ];

  assertions = [
    {
      assertion = builtins.pathExists vault;
      message = "the EC2 machines read the vault at the repository root: run `vaultgen generate` there and commit vault/ (its .gitignore keeps the cleartext out)";
    }
  ];

  odbox.server-base.enable = true;
  odbox.vault = {
    enable = true;
    backend = "age";
    source = if builtins.pathExists vault then vault else null;
    identity = "/var/lib/odbox/age.key"; # ec2-install up copies it there over SSH, before its switch
  };
  # Cloud mode: SSH keys only. The key ec2-install imported reaches root through the
  # instance metadata (amazon-init); the vault's own key works for both users.
  odbox.login = {
    enable = true;
    mode = "cloud";
    rootKeys = lib.optional (builtins.pathExists vaultKey) (builtins.readFile vaultKey);
    adminKeys = lib.optional (builtins.pathExists vaultKey) (builtins.readFile vaultKey);
  };
  # Offsite copies: `ec2-install up` makes the bucket and the instance role (the
  # module reads its credentials from the instance metadata, no keys) and prints the
  # offsite lines to add for the box (its repo is s3://BUCKET/BOX-NAME).
  odbox.backup = {
    enable = true;
    mountBackupDisk = true;
    hot = [ "*-*-* 02:00:00" "*-*-* 13:00:00" ];
    cold = [ "Sun *-*-* 03:00:00" ];
  };
  odbox.swap-file.enable = true;
  system.stateVersion = "26.05";
}
