{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.odbox.swap-file = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "Swap on a file, for machines without a swap partition (EC2, the dev VM).";
    };
    path = mkOption {
      type = types.str;
      default = "/var/swapfile";
      description = "Where the swap file lives; NixOS makes it at boot if it is missing.";
    };
    sizeMiB = mkOption {
      type = types.ints.positive;
      default = 4096;
      description = "Size of the swap file in MiB.";
    };
  };
}
