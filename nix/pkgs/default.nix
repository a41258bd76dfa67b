# The overlay of Odoo Box's packages (overlays.default in flake.nix). The tools
# come from the uv workspace, so the flake passes its inputs in.
{ pyproject-nix, uv2nix, pyproject-build-systems, workspaceRoot }:
final: prev:
let
  tools = import ./tools {
    inherit (final) lib;
    pkgs = final;
    inherit pyproject-nix uv2nix pyproject-build-systems workspaceRoot;
  };
  cli = final.callPackage ./cli-tools { odbox = final; };
in
{
  inherit (tools) vaultgen dbinit odbox-backup k8s-migrate ec2-install odbox-deploy;
  odbox-python-env = tools.venv;
  odbox-libcrypt = tools.libcrypt;
  odoo-addons = final.callPackage ./odoo-addons { };
  snakeoil-sec = final.callPackage ./snakeoil-sec { };
  odbox-admin-tools = cli.admin;
  odbox-dev-tools = cli.dev;
}
