# A deeper local check, needing nixpkgs' lib (fetch nix-community/nixpkgs.lib; never
# committed): evaluate our modules with the real lib.evalModules, over a stand-in for
# the NixOS options they set (nixos-options.nix: nixpkgs' names and types, so a misspelt
# option fails), and return what they configured. tests/nix/test_eval.py runs it when
# NIXPKGS_LIB is set.
#   config: one more module (what a test sets); node: a folder of nix/nodes to evaluate
#   too, its `modulesPath` imports read from modules-path/ (stand-ins of nixpkgs' files);
#   packages: stand-in packages to replace (a path, where a node reads a file of one).
#   modules: our modules (a copy, for the test that misspells an option in one)
{ nixpkgsLib, config ? { }, inlineFiles ? false, node ? null, packages ? { }, withModules ? true
, modules ? ../../nix/modules }:
let
  lib = import nixpkgsLib;
  store = name: "/nix/store/00000000000000000000000000000000-${name}";
  pkgs = lib.genAttrs (import ./stub-packages.nix) store // {
    # Generated files: a store path, or with inlineFiles their text in «name: …»
    # where the path would be (after a "/", so it passes as a path), for the tests to read.
    writeText = name: text: if inlineFiles then "/«${name}:\n${text}»" else store name;
    writeShellScript = name: text: if inlineFiles then "/«${name}:\n${text}»" else store name;
  } // packages;
  evaluated = lib.evalModules {
    specialArgs.modulesPath = toString ./modules-path; # a string: "${modulesPath}/…" stays out of the store
    modules = [
      ./nixos-options.nix
      {
        _module.args.pkgs = pkgs;
        systemd.package = store "systemd";
      }
      config
    ] ++ lib.optional withModules modules
      ++ lib.optional (node != null) node;
  };
in
evaluated.config
