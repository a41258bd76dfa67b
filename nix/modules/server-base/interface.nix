{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.odbox.server-base = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "An Odoo Box server: os-base, the service stack (unless odbox.service-stack.enable = false), SSH, and a firewall that lets in only 22, 80 and 443.";
    };
  };
}
