{ config, lib, ... }:
let
  cfg = config.odbox.server-base;
in
{
  config = lib.mkIf cfg.enable {
    odbox.os-base.enable = true;
    odbox.service-stack.enable = lib.mkDefault true;
    services.openssh = {
      enable = true;
      openFirewall = false; # the firewall below names every open port
      settings = {
        PermitRootLogin = lib.mkDefault "prohibit-password";
        KbdInteractiveAuthentication = false;
      };
    };
    networking.firewall = {
      enable = true;
      allowedTCPPorts = [ 22 80 443 ];
      allowedUDPPorts = [ ];
    };
  };
}
