# A deeper local check, needing nixpkgs' lib (fetch nix-community/nixpkgs.lib; never
# committed): evaluate our modules with the real lib.evalModules, every module
# enabled, over a stand-in for the NixOS options they set, and return what
# they configured. tests/nix/test_eval.py runs it when NIXPKGS_LIB is set.
{ nixpkgsLib, config ? { }, inlineFiles ? false }:
let
  lib = import nixpkgsLib;
  # The NixOS options our modules set, as free-form attributes; and packages as names.
  # Options several modules add to are declared, so their definitions merge as in NixOS.
  nixos = {
    freeformType = lib.types.lazyAttrsOf lib.types.anything;
    options = with lib.types; let
      list = lib.mkOption { type = listOf anything; default = [ ]; };
      set = lib.mkOption { type = attrsOf anything; default = { }; };
      lines' = lib.mkOption { type = lines; default = ""; };
      value = lib.mkOption { type = nullOr anything; default = null; };
    in {
      assertions = list;
      environment.systemPackages = list;
      fileSystems = set;
      swapDevices = list;
      networking.firewall = set // { type = attrsOf anything; };
      nix.settings = set;
      programs.git = set;
      security.sudo = set;
      services.openssh = set;
      services.postgresql.identMap = lines';
      services.postgresql.authentication = lines';
      # nixpkgs' own choice, as a mkDefault of its module: by stateVersion
      services.postgresql.package = lib.mkOption { type = anything; default = "/nix/store/00000000000000000000000000000000-postgresql_17"; };
      services.postgresql.enable = lib.mkOption { type = bool; default = false; };
      services.postgresql.enableTCPIP = value;
      services.postgresql.settings = set;
      services.nginx = set;
      services.step-ca = set;
      security.acme = set;
      environment.etc = set;
      systemd.tmpfiles.rules = list;
      users.groups = set;
      systemd.package = value;
      systemd.services = set;
      systemd.timers = set;
      time.timeZone = value;
      warnings = list;
      users.mutableUsers = value;
      users.users = set;
      system.activationScripts = set;
    };
  };
  store = name: "/nix/store/00000000000000000000000000000000-${name}";
  pkgs = lib.genAttrs (import ./stub-packages.nix) store // {
    # Generated files: a store path, or with inlineFiles their text in «name: …»
    # where the path would be, for the tests to read.
    writeText = name: text: if inlineFiles then "«${name}:\n${text}»" else store name;
    writeShellScript = name: text: if inlineFiles then "«${name}:\n${text}»" else store name;
  };
  evaluated = lib.evalModules {
    modules = [
      nixos
      ../../nix/modules
      {
        _module.args.pkgs = pkgs;
        systemd.package = "/nix/store/00000000000000000000000000000000-systemd";
      }
      config
    ];
  };
in
evaluated.config
