{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  vault = config.odbox.vault;
  secret = types.submodule ({ name, config, ... }: {
    options = {
      file = mkOption {
        type = types.str;
        description = "No default: the .age file in `odbox.vault.source`, e.g. passwords/admin.yesc.age (snakeoil reads the same name without .age).";
      };
      owner = mkOption {
        type = types.str;
        default = "root";
        description = "User that owns the decrypted file.";
      };
      group = mkOption {
        type = types.str;
        default = "root";
        description = "Group of the decrypted file.";
      };
      mode = mkOption {
        type = types.strMatching "0?[0-7]{3}";
        default = "0400";
        description = "File mode of the decrypted file, in octal.";
      };
      path = mkOption {
        type = types.str;
        default = "/run/odbox-vault/${name}";
        readOnly = true;
        description = "Where the decrypted secret is (set by the module, on a ramfs).";
      };
      fingerprint = mkOption {
        type = types.str;
        readOnly = true;
        default =
          let encrypted = "${toString vault.source}/${config.file}"; in
          if vault.backend == "snakeoil" then "${vault.snakeoil}"
          else if vault.source != null && builtins.pathExists encrypted then builtins.hashFile "sha256" encrypted
          else "absent";
        defaultText = lib.literalMD "the SHA-256 of the encrypted file (snakeoil: the package's store path)";
        description = "Changes when the secret does, and reveals nothing of it: for the restartTriggers of the units that read the secret (set by the module).";
      };
    };
  });
in
{
  options.odbox.vault = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "Decrypt the vault's secrets at activation into /run/odbox-vault (a ramfs: never on disk, not even in swap), each with its own owner and mode.";
    };
    backend = mkOption {
      type = types.enum [ "age" "agenix" "snakeoil" ];
      default = "age";
      description = "age: `vaultgen decrypt` with the box's identity. agenix: hand the same secrets to agenix's age.secrets (import agenix's module). snakeoil: the openly insecure test secrets of the snakeoil-sec package, for the dev VM only.";
    };
    source = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "No default: the vault folder of the repository (vaultgen's layout), e.g. ../../vault; its .age files are copied to the Nix store, encrypted. Unused with snakeoil.";
    };
    identity = mkOption {
      type = types.str;
      default = "/var/lib/odbox/age.key";
      description = "The box's age identity (copied over SSH after ec2-install) or SSH host key, e.g. /etc/ssh/ssh_host_ed25519_key when it is among the vault's recipients.";
    };
    package = mkOption {
      type = types.package;
      default = pkgs.vaultgen;
      defaultText = lib.literalExpression "pkgs.vaultgen";
      description = "The vaultgen package (its `decrypt` does the work).";
    };
    snakeoil = mkOption {
      type = types.package;
      default = pkgs.snakeoil-sec;
      defaultText = lib.literalExpression "pkgs.snakeoil-sec";
      description = "Cleartext test secrets for the snakeoil backend (nix/pkgs/snakeoil-sec).";
    };
    secrets = mkOption {
      type = types.attrsOf secret;
      default = { };
      description = "The secrets to decrypt, by name; the other modules add theirs (login, service-stack, backup).";
    };
  };
}
