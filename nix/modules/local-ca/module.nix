{ config, lib, pkgs, ... }:
let
  cfg = config.odbox.local-ca;
  vault = config.odbox.vault.secrets;
  stack = config.odbox.service-stack;
  state = "/var/lib/odbox-local-ca";
  step = "${cfg.package}/bin/step";
  directory = "https://localhost:${toString cfg.port}/acme/acme/directory";
  # step-ca signs with an intermediate under the vault CA, made on the box the
  # first time and again when it no longer verifies (expired, or the CA changed).
  intermediate = pkgs.writeShellScript "odbox-local-ca-intermediate" ''
    set -euo pipefail
    root=${vault.local-ca-root-certificate.path}
    if [ -s ${state}/intermediate.crt ] && ${step} certificate verify ${state}/intermediate.crt --roots "$root" >/dev/null 2>&1; then
      exit 0
    fi
    echo "odbox-local-ca: making step-ca's intermediate certificate under the vault CA"
    umask 027
    ${pkgs.openssl}/bin/openssl rand -base64 32 > ${state}/password.tmp
    ${step} certificate create "Odoo Box local ACME CA" \
      ${state}/intermediate.crt.tmp ${state}/intermediate.key.tmp \
      --profile intermediate-ca --ca "$root" --ca-key ${vault.local-ca-root-key.path} \
      --password-file ${state}/password.tmp --not-after 8760h --force
    for f in password intermediate.crt intermediate.key; do
      chgrp step-ca ${state}/$f.tmp
      mv -f ${state}/$f.tmp ${state}/$f
    done
  '';
  # The units of the ACME client (lego) that order the certificate (the order unit's name
  # changed in NixOS 25.11).
  acmeUnits = [ "acme-${stack.domain}.service" "acme-order-renew-${stack.domain}.service" ];
  # step-ca's unit is up as soon as its process runs, before it listens: lego's first
  # order on a new box would find nothing there and give up until the next timer.
  ready = pkgs.writeShellScript "odbox-local-ca-ready" ''
    for _ in $(seq 1 120); do
      if ${pkgs.curl}/bin/curl --silent --fail --output /dev/null \
          --cacert ${vault.local-ca-root-certificate.path} ${directory}; then
        exit 0
      fi
      sleep 1
    done
    echo "odbox-local-ca: step-ca does not answer at ${directory} after 120 s" >&2
    exit 1
  '';
in
{
  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = config.odbox.vault.enable;
        message = "odbox.local-ca signs under the vault's CA: enable odbox.vault";
      }
    ];
    warnings = lib.optional (!stack.autocerts)
      "odbox.local-ca is on but odbox.service-stack.autocerts is off: nothing asks it for certificates";

    odbox.vault.secrets = {
      local-ca-root-certificate = { file = "certs/vault-ca-cert.pem.age"; mode = "0444"; };
      local-ca-root-key.file = "certs/vault-ca-key.pem.age";
    };

    systemd.services.odbox-local-ca-intermediate = {
      description = "Odoo Box local CA: step-ca's intermediate certificate";
      requiredBy = [ "step-ca.service" ];
      before = [ "step-ca.service" ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        # root:step-ca 0750: step-ca (its own user) enters it to read its key
        Group = "step-ca";
        StateDirectory = "odbox-local-ca";
        StateDirectoryMode = "0750";
        ExecStart = intermediate;
      };
    };

    services.step-ca = {
      enable = true;
      address = "127.0.0.1";
      inherit (cfg) port;
      intermediatePasswordFile = "${state}/password";
      settings = {
        root = vault.local-ca-root-certificate.path;
        crt = "${state}/intermediate.crt";
        key = "${state}/intermediate.key";
        dnsNames = [ "localhost" ];
        logger.format = "text";
        db = {
          type = "badgerv2";
          dataSource = "/var/lib/step-ca/db";
        };
        authority = {
          claims = {
            defaultTLSCertDuration = cfg.certificateDuration;
            maxTLSCertDuration = cfg.certificateDuration;
          };
          provisioners = [ { type = "ACME"; name = "acme"; } ];
        };
        tls = {
          minVersion = 1.2;
          maxVersion = 1.3;
        };
      };
    };
    systemd.services.step-ca = {
      wantedBy = [ "multi-user.target" ];
      before = acmeUnits;
    };
    # The ACME client's orders wait until step-ca answers on its port.
    systemd.services.odbox-local-ca-ready = {
      description = "Odoo Box local CA: wait until step-ca answers";
      after = [ "step-ca.service" ];
      requires = [ "step-ca.service" ];
      before = acmeUnits;
      requiredBy = acmeUnits;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = ready;
        TimeoutStartSec = 150;
      };
    };

    # lego talks to step-ca over HTTPS: it must trust the vault CA.
    security.acme.defaults.environmentFile = pkgs.writeText "odbox-local-ca-lego.env" ''
      LEGO_CA_CERTIFICATES=${vault.local-ca-root-certificate.path}
    '';
    odbox.service-stack.acme = {
      server = lib.mkDefault directory;
      email = lib.mkDefault "root@localhost";
    };
  };
}
