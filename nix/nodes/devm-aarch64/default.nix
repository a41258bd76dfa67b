# The dev VM: the whole stack in QEMU (aarch64, e.g. on an Apple silicon laptop),
# with the snakeoil test secrets and certificates from the local CA.
#   nix build .#devm-vm && ./result/bin/run-devm-vm    (a Mac needs a Linux builder: README.md)
# then https://localhost:8443/ (Odoo), https://localhost:8443/pgadmin4/, and
#   ssh -p 2222 -i "$(nix build --print-out-paths .#snakeoil-sec)/ssh/id_ed25519" admin@localhost
{ lib, modulesPath, pkgs, ... }:
{
  imports = [ "${modulesPath}/profiles/qemu-guest.nix" ];

  nixpkgs.hostPlatform = lib.mkDefault "aarch64-linux";
  networking.hostName = "devm";
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;
  fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
  fileSystems."/boot" = { device = "/dev/disk/by-label/ESP"; fsType = "vfat"; };

  odbox.server-base.enable = true;
  odbox.vault = { enable = true; backend = "snakeoil"; };
  odbox.login = {
    enable = true;
    mode = "standard"; # the snakeoil passwords, on the console too
    # The snakeoil SSH identity (read from the built package: a dev VM may build to evaluate).
    adminKeys = [ (builtins.readFile "${pkgs.snakeoil-sec}/ssh/id_ed25519.pub") ];
  };
  odbox.service-stack = {
    domain = "localhost";
    autocerts = true;
  };
  odbox.local-ca.enable = true;
  # Make the repository once in the VM: odbox-backup init --repo /var/lib/odbox-backups
  odbox.backup = {
    enable = true;
    repo = "/var/lib/odbox-backups";
    hot = [ "hourly" ];
  };
  odbox.swap-file.enable = true;
  # A neutralized copy of a snapshot: `sudo systemctl start odbox-restore-staging@latest`
  # (nix/modules/deploy/docs.md; point odbox.deploy.staging.repo at production's repository).
  odbox.deploy.staging.enable = true;

  # The VM of `nixos-rebuild build-vm`: the host's 8443 to Nginx, 2222 to SSH.
  virtualisation.vmVariant.virtualisation = {
    memorySize = 4096;
    cores = 2;
    # On the host's loopback only: without host.address QEMU listens on every
    # interface, and the snakeoil root password is published.
    forwardPorts = [
      { from = "host"; host.address = "127.0.0.1"; host.port = 8443; guest.port = 443; }
      { from = "host"; host.address = "127.0.0.1"; host.port = 2222; guest.port = 22; }
    ];
  };
  system.stateVersion = "26.05";
}
