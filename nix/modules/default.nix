# Every Odoo Box module; nixosModules.default in flake.nix. Each does nothing
# until enabled, so a machine imports them all and turns on what it runs.
{
  imports = [
    ./os-base
    ./server-base
    ./swap-file
    ./backup
    ./vault
    ./login
    ./service-stack
    ./local-ca
    ./deploy
  ];
}
