{ config, lib, pkgs, ... }:
let
  cfg = config.odbox.os-base;
in
{
  config = lib.mkIf cfg.enable {
    time.timeZone = cfg.timeZone;
    nix.settings.experimental-features = [ "nix-command" "flakes" ];
    # Members of wheel log in with SSH keys (login module); a password prompt for
    # sudo would only push admins towards weaker setups.
    security.sudo.wheelNeedsPassword = false;
    programs.git.enable = true;
    environment.systemPackages = with pkgs; [
      emacs-nox
      curl
      htop
      jq
      lsof
      ripgrep
      tmux
      tree
      age
      # psql and pg_dump of the server's own version where the box runs one
      (if config.services.postgresql.enable then config.services.postgresql.package else postgresql)
    ] ++ cfg.extraPackages;
  };
}
