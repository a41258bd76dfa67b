# Evaluate every interface.nix given (a list of paths) with the stub lib; the
# result maps each path to its `options` tree, for tests/nix/test_nix.py.
{ paths }:
let
  lib = import ./stub-lib.nix;
  # Package defaults name packages; only their names matter here.
  pkgs = builtins.listToAttrs (map (name: { inherit name; value = { _type = "package"; inherit name; }; }) (import ./stub-packages.nix));
  load = path:
    let
      module = import path;
      value = if builtins.isFunction module then module { inherit lib pkgs; config = { }; options = { }; } else module;
    in
    value.options or { };
in
builtins.listToAttrs (map (p: { name = toString p; value = load p; }) paths)
