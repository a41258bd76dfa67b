# A stand-in for the NixOS options our modules and nodes set, for eval-modules.nix: each
# declared with nixpkgs' own name, type and default (read from nixpkgs' module files,
# named next to each group), and nothing else, so a misspelt option fails the evaluation
# as it would on NixOS. How it differs from NixOS: see README.md next to it.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  opt = type: default: mkOption { inherit type default; };
  bool = default: opt types.bool default;
  list = type: opt (types.listOf type) [ ];
  lines = opt types.lines "";
  nullOrStr = opt (types.nullOr types.str) null;
  # A store path here is a string (tests/nix/eval-modules.nix makes packages so).
  package = types.package;
  # nixpkgs declares these options without a default: an unset one is an error only when
  # something reads it, but the tests read the whole configuration as JSON. So here an
  # unset one reads as a marker of its type.
  required = type: mkOption { inherit type; default = unset.${type.name}; };
  unset = {
    str = "«unset»";
    path = "/«unset»";
    separatedString = ""; # lines
    unsignedInt16 = 0; # port
    attrsOf = { };
  };

  # nixos/modules/system/boot/systemd-lib.nix (unitOption) and systemd-unit-options.nix
  unitScalar = types.oneOf [ types.bool types.int types.str types.path package ];
  unitOption = types.either unitScalar (types.listOf unitScalar);
  unitSection = opt (types.attrsOf unitOption) { };
  commonUnit = {
    enable = bool true;
    description = opt types.str "";
    wantedBy = list types.str;
    requiredBy = list types.str;
    before = list types.str;
    after = list types.str;
    wants = list types.str;
    requires = list types.str;
    partOf = list types.str;
    restartTriggers = list types.unspecified;
    reloadTriggers = list types.unspecified;
    unitConfig = unitSection;
  };
  service = types.submodule {
    options = commonUnit // {
      path = list (types.oneOf [ package types.str ]);
      environment = opt (types.attrsOf (types.nullOr (types.oneOf [ types.str types.path package ]))) { };
      serviceConfig = unitSection;
      script = lines;
      preStart = lines;
      postStart = lines;
    };
  };
  timer = types.submodule { options = commonUnit // { timerConfig = unitSection; }; };

  # nixos/modules/system/activation/activation-script.nix
  script = types.either types.str (types.submodule {
    options = {
      deps = list types.str;
      text = required types.lines;
      supportsDryActivation = bool false;
    };
  });

  # nixos/modules/services/web-servers/nginx/location-options.nix and vhost-options.nix
  location = types.submodule {
    options = {
      proxyPass = nullOrStr;
      proxyWebsockets = bool false;
      return = opt (types.nullOr (types.oneOf [ types.str types.int ])) null;
      extraConfig = lines;
    };
  };
  virtualHost = types.submodule {
    options = {
      forceSSL = bool false;
      enableACME = bool false;
      sslCertificate = required types.path;
      sslCertificateKey = required types.path;
      extraConfig = lines;
      locations = opt (types.attrsOf location) { };
    };
  };

  # nixos/modules/config/users-groups.nix
  user = types.submodule {
    options = {
      isSystemUser = bool false;
      isNormalUser = bool false;
      group = opt types.str "";
      home = opt types.path "/var/empty";
      extraGroups = list types.str;
      hashedPasswordFile = nullOrStr;
      openssh.authorizedKeys.keys = list types.singleLineStr;
    };
  };

  # nixos/modules/virtualisation/qemu-vm.nix (the options the dev VM sets)
  forwardPort = types.submodule {
    options = {
      from = opt (types.enum [ "host" "guest" ]) "host";
      proto = opt (types.enum [ "tcp" "udp" ]) "tcp";
      host.address = opt types.str "";
      host.port = required types.port;
      guest.address = opt types.str "";
      guest.port = required types.port;
    };
  };
  usersByUnit = config.systemd.sysusers.enable || config.services.userborn.enable;
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = list types.unspecified;
    warnings = list types.str;

    # nixos/modules/config/system-path.nix, system/etc/etc.nix
    environment.systemPackages = list package;
    environment.etc = opt (types.attrsOf (types.submodule {
      options = {
        text = opt (types.nullOr types.lines) null;
        # nixpkgs: the store file of `text` by default; here null
        source = opt (types.nullOr types.path) null;
        mode = opt types.str "symlink";
      };
    })) { };

    # nixos/modules/tasks/filesystems.nix, config/swap.nix
    fileSystems = opt (types.attrsOf (types.submodule {
      options = {
        device = nullOrStr;
        fsType = opt types.str "auto";
        options = opt (types.nonEmptyListOf types.nonEmptyStr) [ "defaults" ];
        autoResize = bool false;
      };
    })) { };
    swapDevices = list (types.submodule {
      options = {
        device = required types.str;
        size = opt (types.nullOr types.int) null;
      };
    });

    # nixos/modules/tasks/network-interfaces.nix, services/networking/firewall.nix
    networking.hostName = opt (types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$") "nixos";
    networking.firewall = {
      enable = bool true;
      allowedTCPPorts = list types.port;
      allowedUDPPorts = list types.port;
    };

    # nixos/modules/config/nix.nix (settings: freeform, as nixpkgs' nix.conf settings)
    nix.settings = opt (types.submodule { freeformType = types.attrsOf types.anything; }) { };
    # nixos/modules/programs/git.nix, security/sudo.nix, config/locale.nix
    programs.git.enable = bool false;
    security.sudo.wheelNeedsPassword = bool true;
    time.timeZone = nullOrStr;

    # nixos/modules/services/networking/ssh/sshd.nix (settings: freeform, with these typed)
    services.openssh = {
      enable = bool false;
      openFirewall = bool true;
      settings = opt (types.submodule {
        freeformType = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.int types.str (types.listOf types.str) ]));
        options = {
          PasswordAuthentication = opt (types.nullOr types.bool) true;
          KbdInteractiveAuthentication = opt (types.nullOr types.bool) true;
          PermitRootLogin = opt (types.nullOr (types.enum [ "yes" "without-password" "prohibit-password" "forced-commands-only" "no" ])) "prohibit-password";
        };
      }) { };
    };

    # nixos/modules/services/databases/postgresql.nix
    services.postgresql = {
      enable = bool false;
      # nixpkgs' own choice, as a mkDefault of its module: by stateVersion
      package = opt package "/nix/store/00000000000000000000000000000000-postgresql_17";
      enableTCPIP = bool false;
      identMap = lines;
      authentication = lines;
      settings = opt (types.submodule {
        freeformType = types.attrsOf (types.oneOf [ types.bool types.float types.int types.str ]);
        options.listen_addresses = opt types.str "localhost";
      }) { };
    };

    # nixos/modules/services/web-servers/nginx/default.nix
    services.nginx = {
      enable = bool false;
      recommendedTlsSettings = bool false;
      recommendedOptimisation = bool false;
      recommendedGzipSettings = bool false;
      recommendedProxySettings = bool false;
      clientMaxBodySize = opt types.str "10m";
      virtualHosts = opt (types.attrsOf virtualHost) { };
    };

    # nixos/modules/services/security/step-ca.nix
    services.step-ca = {
      enable = bool false;
      address = required types.str;
      port = required types.port;
      intermediatePasswordFile = required types.path;
      settings = required (types.attrsOf types.anything);
    };

    # nixos/modules/security/acme/default.nix (the defaults our modules set)
    security.acme = {
      acceptTerms = bool false;
      defaults = opt (types.submodule {
        options = {
          email = nullOrStr;
          server = opt (types.nullOr types.str) "https://acme-v02.api.letsencrypt.org/directory";
          environmentFile = opt (types.nullOr types.path) null;
        };
      }) { };
    };

    # nixos/modules/system/boot/systemd.nix, systemd/tmpfiles.nix, systemd/sysusers.nix,
    # services/system/userborn.nix
    systemd.package = opt package "/nix/store/00000000000000000000000000000000-systemd";
    systemd.services = opt (types.attrsOf service) { };
    systemd.timers = opt (types.attrsOf timer) { };
    systemd.tmpfiles.rules = list types.str;
    systemd.sysusers.enable = bool false;
    services.userborn.enable = bool false;

    users.mutableUsers = bool true;
    users.users = opt (types.attrsOf user) { };
    users.groups = opt (types.attrsOf (types.submodule { options.gid = opt (types.nullOr types.int) null; })) { };

    system.activationScripts = opt (types.attrsOf script) { };
    system.stateVersion = opt types.str "26.05";

    # nixos/modules/misc/nixpkgs.nix, system/boot/loader/*
    # nixpkgs: no default (it falls back on the system nix runs on); here the box's usual one
    nixpkgs.hostPlatform = opt (types.either types.str (types.attrsOf types.anything)) "x86_64-linux";
    nixpkgs.overlays = list types.unspecified;
    boot.loader.systemd-boot.enable = bool false;
    boot.loader.efi.canTouchEfiVariables = bool false;

    # nixos/modules/virtualisation/build-vm.nix: the whole configuration again, with
    # qemu-vm.nix; here only the options of qemu-vm.nix the dev VM sets.
    virtualisation.vmVariant = opt (types.submodule {
      options.virtualisation = {
        memorySize = opt types.ints.positive 1024;
        cores = opt types.ints.positive 1;
        forwardPorts = list forwardPort;
        # nixpkgs: `pkgs`, the guest's; here a record that says so
        host.pkgs = opt (types.attrsOf types.anything) { system = "the guest's"; };
      };
    }) { };
  };

  config = {
    # nixos/modules/config/users-groups.nix: the perl script that makes the users, unless
    # systemd-sysusers or userborn does; these then need the script empty.
    system.activationScripts.users = if usersByUnit then "" else { text = "# update-users-groups.pl"; };
    system.activationScripts.groups = if usersByUnit then "" else { text = "# groups"; };
    system.activationScripts.specialfs = { text = "# specialfs"; };
    assertions = [
      {
        assertion = !usersByUnit || config.system.activationScripts.users == "";
        message = "system.activationScripts.users has to be empty to use systemd-sysusers or userborn";
      }
    ];
  };
}
