# The module: its options (interface.nix) and what they configure (module.nix).
{
  imports = [
    ./interface.nix
    ./module.nix
  ];
}
