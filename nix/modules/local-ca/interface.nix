{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.odbox.local-ca = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "A Smallstep step-ca ACME server on the box, under the vault's CA, with short-lived certificates: the service stack's autocerts then get and renew certificates from it instead of Let's Encrypt. For test machines (the vault CA's key is decrypted on the box).";
    };
    port = mkOption {
      type = types.port;
      default = 8443;
      description = "step-ca's HTTPS port, on 127.0.0.1 only (the firewall keeps it closed).";
    };
    certificateDuration = mkOption {
      type = types.strMatching "[0-9]+(m|h)";
      default = "72h";
      description = "Lifetime of the certificates it issues; short, so that NixOS's daily renewal renews each one (and can be watched) well before it expires.";
    };
    package = mkOption {
      type = types.package;
      default = pkgs.step-cli;
      defaultText = lib.literalExpression "pkgs.step-cli";
      description = "The step CLI, which makes step-ca's intermediate certificate under the vault CA.";
    };
  };
}
