# Stand-in for `import nixpkgs { system; overlays; }` in flake-packages.nix: a package set
# whose packages are the strings "SYSTEM:NAME", so a test can tell which machine's
# package the flake hands out. Overlays are not applied; nothing is built.
{ system, overlays ? [ ] }:
let
  names = [
    "vaultgen" "odbox-backup" "k8s-migrate" "ec2-install" "dbinit" "odbox-deploy" "odoo-addons" "snakeoil-sec"
    "odbox-admin-tools" "odbox-dev-tools"
  ];
  isLinux = builtins.match ".*-linux" system != null;
in
builtins.listToAttrs (map (name: { inherit name; value = "${system}:${name}"; }) names) // {
  inherit system;
  stdenv.hostPlatform = { inherit system isLinux; isDarwin = !isLinux; };
}
