# The nixpkgs packages our modules name, for the stand-in `pkgs` of eval-interfaces.nix
# and eval-modules.nix: only the names matter there.
[
  "age" "curl" "emacs-nox" "htop" "jq" "lsof" "ripgrep" "tmux" "tree" "postgresql" "util-linux"
  "findutils" "openssl" "step-cli" "odoo" "odoo17" "pgadmin4" "bash" "nix"
  # this flake's overlay
  "dbinit" "ec2-install" "k8s-migrate" "odbox-backup" "odbox-deploy" "vaultgen" "snakeoil-sec" "odoo-addons"
]
