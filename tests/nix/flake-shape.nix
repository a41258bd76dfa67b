# What flake.nix exposes, read with a bare nix-instantiate (no nixpkgs, no network):
# the outputs function is called with stand-in inputs, and only the names of what it
# makes are read, which needs none of the inputs. For tests/nix/test_nix.py.
let
  flake = import ../../flake.nix;
  stub = { lib = { }; };
  outputs = flake.outputs {
    self = outputs;
    nixpkgs = stub;
    pyproject-nix = stub;
    uv2nix = stub;
    pyproject-build-systems = stub;
  };
in
{
  inherit (flake) description;
  inputs = builtins.mapAttrs (_: input: input.url) flake.inputs;
  outputs = builtins.attrNames outputs;
  nixosConfigurations = builtins.attrNames outputs.nixosConfigurations;
  nixosModule = toString outputs.nixosModules.default;
}
