# The flake's `packages`, read with nixpkgs' real lib (NIXPKGS_LIB) and stand-ins for the
# rest: package sets from fake-nixpkgs/ and a nixosSystem that records what the flake asks
# of it (the dev VM's extendModules). For tests/nix/test_eval.py.
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  flake = import ../../flake.nix;
  fake = import ./fake-nixpkgs;
  nixosSystem = { modules }: {
    # the guest's package set: the dev VM is aarch64-linux
    pkgs = fake { system = "aarch64-linux"; };
    extendModules = { modules }: {
      config.system.build.vm =
        "vm whose runner is ${(builtins.head modules).virtualisation.vmVariant.virtualisation.host.pkgs.system}'s";
    };
  };
  stub = { lib = { }; };
  outputs = flake.outputs {
    self = outputs;
    nixpkgs = { lib = lib // { inherit nixosSystem; }; outPath = toString ./fake-nixpkgs; };
    pyproject-nix = stub;
    uv2nix = stub;
    pyproject-build-systems = stub;
  };
in
outputs.packages
