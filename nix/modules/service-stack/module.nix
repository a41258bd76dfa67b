{ config, lib, pkgs, ... }:
let
  cfg = config.odbox.service-stack;
  odoo = cfg.odoo;
  vault = config.odbox.vault.secrets;
  runOdoo = !cfg.bootstrap-mode;
  pg = config.services.postgresql.package;
  dbinit = "${cfg.dbinit.package}/bin/dbinit";
  socket = "/run/postgresql";
  home = "/var/lib/odoo";
  dataDir = "${home}/data";
  runtimeConf = "/run/odoo/odoo.conf";
  certificate = if cfg.certificate != null then cfg.certificate else cfg.domain;
  pgadminEmail = if cfg.pgadmin.email != null then cfg.pgadmin.email else "admin@${cfg.domain}";
  adminRole = if config.odbox.login.enable then config.odbox.login.adminUser else "admin";

  # odoo.conf and the start scripts: one source with the tests (tests/box), see ./odoo.nix.
  odooUnit = import ./odoo.nix {
    inherit (odoo) db httpPort geventPort workers maxCronThreads addons settings initialModules;
    inherit socket dataDir runtimeConf;
    adminPasswordFile = vault.odoo-admin-password.path;
    psql = "${pg}/bin/psql";
    odoo = "${odoo.package}/bin/odoo";
    # each secretSettings option's decrypted vault file, read by odoo-configure at start
    secretFiles = lib.mapAttrs (key: _: vault.${settingSecret key}.path) odoo.secretSettings;
  };
  odooConf = pkgs.writeText "odoo.conf" odooUnit.conf;
  odooConfigure = pkgs.writeShellScript "odoo-configure" (odooUnit.configure odooConf);
  odooInitialize = pkgs.writeShellScript "odoo-initialize" odooUnit.initialize;
  # odoo.settings land in the store: no option there may hold a secret.
  secretNamed = key: builtins.match ".*(passw|secret|token).*" (lib.toLower key) != null;
  leaking = lib.filter (key: secretNamed key && !(key == "db_password" && odoo.settings.db_password == false))
    (lib.attrNames odoo.settings);
  settingSecret = key: "odoo-setting-${key}";
  # The vault secrets Odoo reads: a change of one restarts it.
  odooSecrets = [ "odoo-admin-password" ] ++ map settingSecret (lib.attrNames odoo.secretSettings);
  hardening = {
    NoNewPrivileges = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectControlGroups = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
  };
  upstream = port: "http://127.0.0.1:${toString port}";
in
{
  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      odbox.service-stack.odoo.confFile = odooConf;
      assertions = [
        {
          assertion = config.odbox.vault.enable;
          message = "odbox.service-stack reads the Odoo admin password, PgAdmin's password and the TLS certificate from the vault: enable odbox.vault";
        }
        {
          assertion = !cfg.autocerts || cfg.acme.email != null;
          message = "odbox.service-stack.autocerts needs odbox.service-stack.acme.email";
        }
        {
          assertion = leaking == [ ];
          message = "odbox.service-stack.odoo.settings must not hold ${lib.concatStringsSep ", " leaking}: it would land in the Nix store, readable by every user; give a secret's vault file to odbox.service-stack.odoo.secretSettings (the admin password comes from the vault already)";
        }
        {
          assertion = !(odoo.settings ? db_password) || odoo.settings.db_password == false;
          message = "odbox.service-stack.odoo.settings.db_password: Odoo logs in over the Unix socket with peer auth, without a password";
        }
        {
          assertion = !(odoo.secretSettings ? admin_passwd) && !(odoo.secretSettings ? db_password)
            && lib.all (key: builtins.match "[a-z_][a-z0-9_]*" key != null) (lib.attrNames odoo.secretSettings);
          message = "odbox.service-stack.odoo.secretSettings takes odoo.conf option names (lower case, digits, _), not admin_passwd (the vault's passwords/odoo-admin.txt) nor db_password (peer auth)";
        }
      ];

      odbox.vault.secrets = lib.mkMerge [
        (lib.mkIf runOdoo ({
          odoo-admin-password = { file = "passwords/odoo-admin.txt.age"; owner = "odoo"; group = "odoo"; };
        } // lib.mapAttrs' (key: file: lib.nameValuePair (settingSecret key) {
          inherit file; owner = "odoo"; group = "odoo";
        }) odoo.secretSettings))
        (lib.mkIf cfg.pgadmin.enable {
          pgadmin-password = { file = "passwords/pgadmin-admin.txt.age"; owner = "pgadmin"; group = "pgadmin"; };
        })
        (lib.mkIf (!cfg.autocerts) {
          tls-certificate = { file = "certs/${certificate}-cert.pem.age"; owner = "nginx"; group = "nginx"; mode = "0444"; };
          tls-key = { file = "certs/${certificate}-key.pem.age"; owner = "nginx"; group = "nginx"; };
        })
      ];

      # PostgreSQL on its Unix socket only; every login is peer (the system user's
      # own name, or a map such as the backup module's root -> postgres).
      services.postgresql = {
        enable = true;
        # The major version is nixpkgs' choice for the machine's stateVersion (set
        # services.postgresql.package to pin it): a new major needs a dump and restore.
        enableTCPIP = false;
        settings.listen_addresses = lib.mkForce "";
        authentication = ''
          local all all peer
          host all all 0.0.0.0/0 reject
          host all all ::/0 reject
        '';
      };

      # dbinit setup after every PostgreSQL start: roles, databases and grants
      # as they should be, whatever was changed by hand since.
      systemd.services.odbox-dbinit = {
        description = "Odoo Box database roles, databases and grants (dbinit setup)";
        wantedBy = [ "multi-user.target" "postgresql.service" ];
        after = [ "postgresql.service" ];
        requires = [ "postgresql.service" ];
        partOf = [ "postgresql.service" ];
        environment = {
          ODBOX_DSN = "host=${socket} dbname=postgres";
          ODBOX_DB = odoo.db;
          ODBOX_ADMIN_ROLE = adminRole;
        };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          User = "postgres";
          Group = "postgres";
          ExecStartPre = "${dbinit} wait --timeout 120";
          ExecStart =
            if cfg.pgadmin.enable then "${dbinit} setup --lock-timeout 300"
            else "${dbinit} setup --lock-timeout 300 --no-pgadmin";
        } // hardening;
      };

      users.users.odoo = {
        isSystemUser = true;
        group = "odoo";
        inherit home;
      };
      users.groups.odoo = { };
      # Also in bootstrap-mode, where a restore puts the filestore here before Odoo ever runs.
      systemd.tmpfiles.rules = [
        "d ${home} 0750 odoo odoo -"
        "d ${dataDir} 0750 odoo odoo -"
        "d ${dataDir}/filestore 0750 odoo odoo -"
      ];

      # `dbinit check` (as postgres) and psql of the server's own version for the admins.
      environment.systemPackages = [ cfg.dbinit.package ];

      services.nginx = {
        enable = true;
        recommendedTlsSettings = true;
        recommendedOptimisation = true;
        recommendedGzipSettings = true;
        recommendedProxySettings = true;
        clientMaxBodySize = cfg.maxUploadSize;
        virtualHosts.${cfg.domain} = {
          forceSSL = true; # port 80 only redirects to HTTPS
          enableACME = cfg.autocerts;
          sslCertificate = lib.mkIf (!cfg.autocerts) vault.tls-certificate.path;
          sslCertificateKey = lib.mkIf (!cfg.autocerts) vault.tls-key.path;
          extraConfig = ''
            add_header Strict-Transport-Security "max-age=63072000" always;
          '';
          locations = lib.optionalAttrs runOdoo {
            # odbox_health tells the database name and versions: for checks on the box only.
            "= /odbox/health" = {
              proxyPass = upstream odoo.httpPort;
              extraConfig = ''
                allow 127.0.0.1;
                allow ::1;
                deny all;
              '';
            };
          } // {
            "/" = if runOdoo then {
              proxyPass = upstream odoo.httpPort;
              extraConfig = ''
                proxy_read_timeout 720s;
                proxy_send_timeout 720s;
                proxy_redirect off;
                proxy_cookie_flags session_id samesite=lax secure;
              '';
            } else {
              return = ''503 "Odoo Box is in bootstrap mode: load the data, then switch to the full configuration.\n"'';
            };
          } // lib.optionalAttrs runOdoo {
            # LiveChat and the bus: Odoo's gevent worker (websocket since Odoo 16, longpolling before).
            "/websocket" = {
              proxyPass = upstream odoo.geventPort;
              proxyWebsockets = true;
              extraConfig = "proxy_read_timeout 3600s;";
            };
            "/longpolling" = {
              proxyPass = upstream odoo.geventPort;
              extraConfig = "proxy_read_timeout 3600s;";
            };
          } // lib.optionalAttrs cfg.pgadmin.enable {
            "/pgadmin4/" = {
              proxyPass = "${upstream cfg.pgadmin.port}/";
              extraConfig = ''
                proxy_set_header X-Script-Name /pgadmin4;
                proxy_redirect off;
              '';
            };
          };
        };
      };

      # Nginx reads the certificate and its key at start.
      systemd.services.nginx.restartTriggers = lib.mkIf (!cfg.autocerts)
        [ vault.tls-certificate.fingerprint vault.tls-key.fingerprint ];

      security.acme = lib.mkIf cfg.autocerts {
        acceptTerms = true;
        defaults = { inherit (cfg.acme) email; } // lib.optionalAttrs (cfg.acme.server != null) {
          inherit (cfg.acme) server;
        };
      };
    }

    (lib.mkIf runOdoo {
      systemd.services.odoo = {
        description = "Odoo (multi-process, gevent worker for LiveChat)";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" "odbox-dbinit.service" ];
        requires = [ "odbox-dbinit.service" ];
        # psql, pg_dump and pg_restore of the server's version: Odoo's database manager and
        # backups call them by name (nixpkgs' own Odoo module puts them there too).
        path = [ pg ];
        restartTriggers = [ odooConf ] ++ map (name: vault.${name}.fingerprint) odooSecrets;
        serviceConfig = {
          User = "odoo";
          Group = "odoo";
          RuntimeDirectory = "odoo";
          RuntimeDirectoryMode = "0700";
          StateDirectory = "odoo";
          StateDirectoryMode = "0750";
          WorkingDirectory = home;
          ExecStartPre = [ odooConfigure ] ++ lib.optional odoo.initialize odooInitialize;
          ExecStart = odooUnit.start;
          Restart = "on-failure";
          RestartSec = 5;
          TimeoutStartSec = "20min"; # installing base on a new box
          # Odoo's own limits stop a worker gracefully first.
          TimeoutStopSec = 90;
        } // hardening;
      };

      systemd.services.odoo-session-reaper = {
        description = "Delete Odoo web sessions unused for ${toString cfg.sessionReaper.maxAge} days";
        unitConfig.ConditionPathIsDirectory = "${dataDir}/sessions";
        serviceConfig = {
          Type = "oneshot";
          User = "odoo";
          Group = "odoo";
          ExecStart = "${pkgs.findutils}/bin/find ${dataDir}/sessions -xdev -type f -mmin +${toString (cfg.sessionReaper.maxAge * 1440)} -delete";
          ReadWritePaths = [ "${dataDir}/sessions" ];
        } // hardening;
      };
      systemd.timers.odoo-session-reaper = {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.sessionReaper.at;
          Persistent = true;
        };
      };
    })

    (lib.mkIf cfg.bootstrap-mode {
      # No Odoo to stop or start around a cold backup or a restore.
      odbox.backup.odooService = lib.mkDefault "";
    })

    (lib.mkIf cfg.pgadmin.enable {
      users.users.pgadmin = {
        isSystemUser = true;
        group = "pgadmin";
        home = "/var/lib/pgadmin";
      };
      users.groups.pgadmin = { };
      # pgAdmin reads /etc/pgadmin/config_system.py; it holds no secret.
      environment.etc."pgadmin/config_system.py".text = ''
        SERVER_MODE = True
        DEFAULT_SERVER = "127.0.0.1"
        DEFAULT_SERVER_PORT = ${toString cfg.pgadmin.port}
        DATA_DIR = "/var/lib/pgadmin"
        LOG_FILE = "/var/lib/pgadmin/pgadmin4.log"
        CONFIG_DATABASE_URI = "postgresql://pgadmin@/pgadmin?host=${socket}"
        UPGRADE_CHECK_ENABLED = False
        # Peer auth: no database password is ever stored, so no master password to ask for.
        MASTER_PASSWORD_REQUIRED = False
        SESSION_COOKIE_SECURE = True
        ENHANCED_COOKIE_PROTECTION = True
        # Behind Nginx, which sets X-Forwarded-* and X-Script-Name.
        PROXY_X_FOR_COUNT = 1
        PROXY_X_PROTO_COUNT = 1
        PROXY_X_HOST_COUNT = 1
        ALLOW_SPECIAL_EMAIL_DOMAINS = ["localhost", "local", "internal", "test"]
      '';
      systemd.services.pgadmin = {
        description = "PgAdmin (behind Nginx at /pgadmin4/)";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" "odbox-dbinit.service" ];
        requires = [ "odbox-dbinit.service" ];
        restartTriggers = [ config.environment.etc."pgadmin/config_system.py".text ];
        environment = {
          ODBOX_PGADMIN_EMAIL = pgadminEmail;
          ODBOX_PGADMIN_PASSWORD_FILE = vault.pgadmin-password.path;
          ODBOX_PGADMIN_DB_URI = "postgresql://pgadmin@/pgadmin?host=${socket}";
          ODBOX_PGADMIN_DATA_DIR = "/var/lib/pgadmin";
          ODBOX_DB = odoo.db;
        };
        serviceConfig = {
          User = "pgadmin";
          Group = "pgadmin";
          StateDirectory = "pgadmin";
          StateDirectoryMode = "0700";
          ExecStartPre = "${dbinit} pgadmin-boot --pgadmin-cli ${cfg.pgadmin.package}/bin/pgadmin4-cli";
          ExecStart = "${cfg.pgadmin.package}/bin/pgadmin4";
          Restart = "on-failure";
          RestartSec = 5;
        } // hardening;
      };
    })
  ]);
}
