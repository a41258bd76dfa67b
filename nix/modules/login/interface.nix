{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.odbox.login = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "How root and the admin user log in: SSH keys only (cloud) or passwords too (standard).";
    };
    mode = mkOption {
      type = types.enum [ "cloud" "standard" ];
      default = "cloud";
      description = "cloud: SSH with keys only, passwords locked. standard: passwords on the console and over SSH, plus keys; the hashes come from the vault (passwords/NAME.yesc.age).";
    };
    adminUser = mkOption {
      type = types.str;
      default = "admin";
      description = "The admin's login name; a member of wheel (sudo without a password, see os-base).";
    };
    rootKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "SSH public keys that may log in as root.";
    };
    adminKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "SSH public keys that may log in as the admin user.";
    };
  };
}
