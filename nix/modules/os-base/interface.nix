{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.odbox.os-base = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "A plain system base: admin CLI tools, Emacs, and sudo without a password for wheel.";
    };
    timeZone = mkOption {
      type = types.str;
      default = "UTC";
      description = "The machine's time zone (backup timers run in it).";
    };
    extraPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
      description = "More packages for the system path, on top of the admin tools.";
    };
  };
}
