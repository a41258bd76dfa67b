# Local only (fetched uv2nix and pyproject.nix, never committed): uv2nix reads our
# workspace and uv.lock as the flake will, and says what each tool's environment holds.
{ nixpkgsLib, uv2nix, pyprojectNix }:
let
  lib = import nixpkgsLib;
  pyproject-nix = { lib = import (pyprojectNix + "/lib") { inherit lib; }; };
  uv2nixLib = import (uv2nix + "/lib") { inherit lib pyproject-nix; };
  workspace = uv2nixLib.workspace.loadWorkspace { workspaceRoot = ../..; };
in
{
  inherit (workspace.deps) default all;
}
