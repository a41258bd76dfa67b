{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  port = description: default: mkOption {
    type = types.port;
    inherit default description;
  };
in
{
  options.odbox.service-stack = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "Odoo (multi-process, with the gevent LiveChat worker), PostgreSQL on its Unix socket only, Nginx with TLS in front, PgAdmin, and the session reaper.";
    };
    bootstrap-mode = mkOption {
      type = types.bool;
      default = false;
      description = "The whole stack but Odoo itself (the nodes' -boot variants): load the data first (odbox-backup restore, k8s-migrate pull), then switch to the full configuration. Nginx answers 503 where Odoo would be.";
    };
    domain = mkOption {
      type = types.str;
      default = "localhost";
      example = "odoo.example.com";
      description = "The name Nginx serves Odoo and PgAdmin under; the vault's certificate for it is certs/DOMAIN-cert.pem (vaultgen's layout) unless autocerts.";
    };
    certificate = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "wildcard.example.com";
      description = "The vault certificate Nginx serves, by vaultgen's name for it (certs/NAME-cert.pem and certs/NAME-key.pem); null: the domain. Unused with autocerts.";
    };
    autocerts = mkOption {
      type = types.bool;
      default = false;
      description = "Get and renew the certificate over ACME (Let's Encrypt, or odbox.local-ca's CA) instead of taking it from the vault.";
    };
    acme = {
      email = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "No default: the account address the CA writes to about expiring certificates; required with autocerts.";
      };
      server = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://localhost:8443/acme/acme/directory";
        description = "The ACME directory URL; null for Let's Encrypt. odbox.local-ca sets its own.";
      };
    };
    maxUploadSize = mkOption {
      type = types.strMatching "[0-9]+[kKmMgG]?";
      default = "128m";
      description = "Nginx's client_max_body_size: Odoo's own upload limit (web.max_file_upload_size) is 128 MiB.";
    };

    odoo = {
      package = mkOption {
        type = types.package;
        default = pkgs.odoo;
        defaultText = lib.literalExpression "pkgs.odoo";
        example = lib.literalExpression "pkgs.odoo17";
        description = "The Odoo package from nixpkgs (odoo, odoo17, …); the module uses its bin/odoo.";
      };
      confFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        internal = true;
        description = "Set by the module (null while it is off): the store path of the generated odoo.conf (without the admin password), for odbox-deploy's `odoo -u`.";
      };
      addons = mkOption {
        type = types.listOf types.package;
        default = [ pkgs.odoo-addons ];
        defaultText = lib.literalExpression "[ pkgs.odoo-addons ]";
        description = "Packages whose top folder holds Odoo addons; they make addons_path after Odoo's own.";
      };
      db = mkOption {
        type = types.strMatching "[A-Za-z_][A-Za-z0-9_]*";
        default = "odoo";
        description = "Odoo's one database (db_name and dbfilter; database listing stays off).";
      };
      workers = mkOption {
        type = types.ints.positive;
        default = 2;
        description = "HTTP worker processes (Odoo's guideline: 2 per core plus 1); always above 0, so Odoo runs multi-process with its gevent worker for LiveChat.";
      };
      maxCronThreads = mkOption {
        type = types.ints.unsigned;
        default = 1;
        description = "Cron worker processes.";
      };
      httpPort = port "Odoo's HTTP port, on 127.0.0.1 only (Nginx is the way in)." 8069;
      geventPort = port "Odoo's gevent (LiveChat, websocket) port, on 127.0.0.1 only." 8072;
      initialize = mkOption {
        type = types.bool;
        default = true;
        description = "On a start that finds the database empty, install initialModules first (no demo data), as `odoo -i base` would.";
      };
      initialModules = mkOption {
        type = types.listOf (types.strMatching "[a-z0-9_]+");
        default = [ "base" "odbox_health" ];
        description = "The modules installed when the database is initialized (see initialize); odbox_health is in pkgs.odoo-addons.";
      };
      settings = mkOption {
        type = with types; attrsOf (oneOf [ str int bool ]);
        default = { };
        example = { limit_time_real = 300; log_level = "warn"; };
        description = "More [options] for odoo.conf; they override the module's. They land in the Nix store, readable by every user, so no option whose name says password, passwd, secret or token may be one (the module refuses them): give those to secretSettings. admin_passwd comes from the vault at each start.";
      };
      secretSettings = mkOption {
        type = types.attrsOf (types.strMatching "[^/].*[.]age");
        default = { };
        example = { smtp_password = "passwords/smtp.txt.age"; };
        description = "odoo.conf options whose values are secrets (smtp_password, …), each the vault file that holds it (in odbox.vault.source): the module decrypts it for the odoo user as the vault secret odoo-setting-NAME and writes its first line into odoo.conf at each start, never into the store. Odoo restarts when such a file changes.";
      };
    };

    pgadmin = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "PgAdmin behind Nginx at /pgadmin4/, connected to the local server over the socket (dbinit pgadmin-boot).";
      };
      package = mkOption {
        type = types.package;
        default = pkgs.pgadmin4;
        defaultText = lib.literalExpression "pkgs.pgadmin4";
        description = "The PgAdmin package (bin/pgadmin4 and bin/pgadmin4-cli).";
      };
      email = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "PgAdmin's first account (null: admin@DOMAIN); its password is the vault's passwords/pgadmin-admin.txt.";
      };
      port = port "PgAdmin's port, on 127.0.0.1 only." 5050;
    };

    sessionReaper = {
      maxAge = mkOption {
        type = types.ints.positive;
        default = 7;
        description = "Delete Odoo web sessions not used for this many days: Odoo keeps each as a file and deletes old ones only by chance (about 1 request in 1000), so a quiet box keeps them all.";
      };
      at = mkOption {
        type = types.listOf types.str;
        default = [ "*-*-* 03:30:00" ];
        description = "systemd calendar specs of the session reaper's runs.";
      };
    };

    dbinit.package = mkOption {
      type = types.package;
      default = pkgs.dbinit;
      defaultText = lib.literalExpression "pkgs.dbinit";
      description = "The dbinit package: `setup` after each PostgreSQL start, `check` on the admins' path.";
    };
  };
}
