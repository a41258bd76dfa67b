{ config, lib, options, pkgs, ... }:
let
  cfg = config.odbox.vault;
  root = "/run/odbox-vault";
  vaultgen = "${cfg.package}/bin/vaultgen";
  # Only the .age files of the vault folder go to the Nix store: a checkout may hold
  # the cleartext too (git ignores it, a path copy would not).
  # Without a source the assertion below fails the build; until then (a configuration read
  # as a whole, by a test or `nix eval`) the scripts name no folder rather than fail to evaluate.
  source = if cfg.source == null then "/no-odbox-vault-source" else builtins.path {
    path = cfg.source;
    name = "odbox-vault";
    filter = path: type: type == "directory" || lib.hasSuffix ".age" (baseNameOf path);
  };
  secrets = lib.attrValues (lib.mapAttrs (name: s: s // { inherit name; }) cfg.secrets);
  q = lib.escapeShellArg;
  # Decrypt (or, for snakeoil, copy) each secret as root into a temp file with
  # its mode, then rename: a secret is either whole or absent, never half-written.
  install = s:
    if cfg.backend == "snakeoil" then ''
      if install -m ${s.mode} ${q "${cfg.snakeoil}/${lib.removeSuffix ".age" s.file}"} ${q "${s.path}.tmp"}; then
        mv -f ${q "${s.path}.tmp"} ${q s.path}
      else
        echo "odbox-vault: the snakeoil secrets have no ${s.file}" >&2
        failed=1
      fi
    '' else ''
      if ! ${vaultgen} decrypt --identity ${q cfg.identity} --out ${q s.path} --mode ${s.mode} ${q "${source}/${s.file}"}; then
        echo "odbox-vault: cannot decrypt ${s.file} with ${cfg.identity}" >&2
        failed=1
      fi
    '';
  names = map (s: s.name) secrets;
  # Secrets no longer configured do not stay behind on the ramfs (agenix gets there with a
  # new folder per generation; here the names are known, so the others go).
  prune = ''
    for file in ${root}/* ${root}/.[!.]*; do
      [ -e "$file" ] || continue
      case "''${file##*/}" in
        ${lib.concatMapStringsSep "|" q (if names == [ ] then [ "/" ] else names)}) ;; # "/": no file's name
        *) rm -rf -- "$file"; echo "odbox-vault: removed ''${file##*/}, no longer configured" >&2 ;;
      esac
    done
  '';
  decrypt = ''
    # ramfs, as agenix does: unlike tmpfs it is never swapped out to disk.
    mkdir -p ${root}
    if ! ${pkgs.util-linux}/bin/mountpoint -q ${root}; then
      ${pkgs.util-linux}/bin/mount -t ramfs none ${root} -o nodev,nosuid,mode=0751
    fi
    failed=0
    ${lib.concatMapStrings install secrets}
    ${prune}
    if [ "$failed" != 0 ]; then
      echo "odbox-vault: some secrets are missing; is the identity ${cfg.identity} there?" >&2
    fi
  '';
  owners = lib.concatMapStrings (s: ''
    if [ -e ${q s.path} ]; then
      chown ${q "${s.owner}:${s.group}"} ${q s.path} || echo "odbox-vault: no owner ${s.owner}:${s.group} for ${s.name}" >&2
    fi
  '') secrets;
  # With systemd-sysusers or userborn there is no users activation script to run before
  # (nixpkgs wants system.activationScripts.users empty then) and the users are made by a
  # unit: the vault becomes two units around it, as agenix switches to a unit then.
  usersByUnit = config.systemd.sysusers.enable || config.services.userborn.enable;
  usersUnit = if config.services.userborn.enable then "userborn.service" else "systemd-sysusers.service";
  # Before sysinit.target, which every ordinary unit starts after: Odoo, Nginx and the
  # others find their secrets in place.
  early = {
    wantedBy = [ "sysinit.target" ];
    before = [ "sysinit.target" ];
    unitConfig.DefaultDependencies = false;
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
    };
  };
in
{
  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = [
        {
          assertion = cfg.backend == "snakeoil" || cfg.source != null;
          message = "odbox.vault.source must name the vault folder (backend ${cfg.backend})";
        }
        {
          assertion = cfg.backend != "agenix" || options ? age;
          message = "odbox.vault.backend = \"agenix\" needs agenix's NixOS module imported";
        }
      ];
      warnings = lib.optional (cfg.backend == "snakeoil")
        "odbox.vault uses the snakeoil secrets: openly published test secrets, for the dev VM only";
    }
    (lib.mkIf (cfg.backend != "agenix" && !usersByUnit) {
      # As agenix does: decrypt before the users script (it reads password hashes),
      # and give each file its owner once users and groups exist.
      system.activationScripts.odbox-vault-decrypt = {
        deps = [ "specialfs" ];
        text = decrypt;
      };
      system.activationScripts.odbox-vault-owners = {
        deps = [ "users" "groups" "odbox-vault-decrypt" ];
        text = owners;
      };
      system.activationScripts.users.deps = [ "odbox-vault-decrypt" ];
    })
    (lib.mkIf (cfg.backend != "agenix" && usersByUnit) {
      # Before the users are made (userborn reads the password hashes), and the owners after.
      systemd.services.odbox-vault-decrypt = lib.recursiveUpdate early {
        description = "Odoo Box vault: decrypt the secrets into ${root}";
        before = [ "sysinit.target" usersUnit ];
        serviceConfig.ExecStart = pkgs.writeShellScript "odbox-vault-decrypt" decrypt;
      };
      systemd.services.odbox-vault-owners = lib.recursiveUpdate early {
        description = "Odoo Box vault: give each secret its owner";
        after = [ usersUnit "odbox-vault-decrypt.service" ];
        requires = [ "odbox-vault-decrypt.service" ];
        serviceConfig.ExecStart = pkgs.writeShellScript "odbox-vault-owners" owners;
      };
    })
    (lib.mkIf (cfg.backend == "agenix") (lib.optionalAttrs (options ? age) {
      age.identityPaths = [ cfg.identity ];
      age.secrets = lib.mapAttrs (name: s: {
        file = "${source}/${s.file}";
        inherit (s) owner group mode path;
      }) cfg.secrets;
    }))
  ]);
}
