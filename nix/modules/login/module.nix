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
      # Below a plain definition: a machine can still say PermitRootLogin = "no".
      services.openssh.settings = lib.mapAttrs (_: lib.mkOverride 900) {
        PasswordAuthentication = standard;
        PermitRootLogin = if standard then "yes" else "prohibit-password";
      };
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
