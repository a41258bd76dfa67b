{ config, lib, ... }:
let
  cfg = config.odbox.login;
  standard = cfg.mode == "standard";
  vault = config.odbox.vault.secrets;
in
{
  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      # Accounts are what this file says, nothing set by hand survives a switch.
      users.mutableUsers = false;
      users.users.root.openssh.authorizedKeys.keys = cfg.rootKeys;
      users.users.${cfg.adminUser} = {
        isNormalUser = true;
        extraGroups = [ "wheel" ];
        openssh.authorizedKeys.keys = cfg.adminKeys;
      };
      # Below a plain definition: a machine can still say PasswordAuthentication = false.
      services.openssh.settings.PasswordAuthentication = lib.mkOverride 900 standard;
      # nixpkgs' amazon-image.nix sets PermitRootLogin = "prohibit-password" at normal
      # priority, which would beat a mkOverride 900 and lock root's password out in standard
      # mode on EC2: standard mode's "yes" is set above it (mkOverride 90, below mkForce), so a
      # machine that wants otherwise says so with lib.mkForce. Cloud mode's "prohibit-password"
      # agrees with amazon-image.nix and stays below a plain definition.
      services.openssh.settings.PermitRootLogin =
        if standard then lib.mkOverride 90 "yes" else lib.mkOverride 900 "prohibit-password";
      assertions = [
        {
          # In standard mode too: if the vault cannot be decrypted, the passwords are locked.
          assertion = cfg.rootKeys != [ ] || cfg.adminKeys != [ ];
          message = "odbox.login needs at least one SSH key (rootKeys or adminKeys), or nobody can log in when the passwords are locked";
        }
        {
          assertion = !standard || config.odbox.vault.enable;
          message = "odbox.login in standard mode reads the password hashes from the vault: enable odbox.vault";
        }
      ];
    }
    (lib.mkIf standard {
      odbox.vault.secrets = {
        root-password-hash.file = "passwords/root.yesc.age";
        admin-password-hash.file = "passwords/admin.yesc.age";
      };
      users.users.root.hashedPasswordFile = vault.root-password-hash.path;
      users.users.${cfg.adminUser}.hashedPasswordFile = vault.admin-password-hash.path;
    })
  ]);
}
