# Stand-in for nixpkgs' nixos/modules/virtualisation/amazon-image.nix: what it sets that
# our options meet, at the priority it sets it (read from the file: plain definitions,
# hostName by mkDefault). The rest (boot, EC2 metadata units, the SSM agent) is left out.
{ lib, ... }:
{
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
    autoResize = true;
  };
  services.openssh.enable = true;
  services.openssh.settings.PermitRootLogin = "prohibit-password";
  networking.hostName = lib.mkDefault "";
}
