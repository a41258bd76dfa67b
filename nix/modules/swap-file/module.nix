{ config, lib, ... }:
let
  cfg = config.odbox.swap-file;
in
{
  config = lib.mkIf cfg.enable {
    swapDevices = [
      {
        device = cfg.path;
        size = cfg.sizeMiB;
      }
    ];
  };
}
