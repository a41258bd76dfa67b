# The NixOS VM test (flake checks.<system>.stack): the service stack with the
# snakeoil vault boots, Odoo answers behind Nginx, a backup is taken, the data
# changes, and the restore unit brings it back; then a deploy of an addon change
# is applied and a failing one rolled back (odbox-deploy). Needs KVM: run it with
# `nix build .#checks.x86_64-linux.stack -L` on a Linux machine (not on our CI).
{ pkgs, module }:
let
  backup = "${pkgs.odbox-backup}/bin/odbox-backup";
  # tests/deploy's addon at v1, v2 (a field and a record) and v3 (an update that raises)
  demo = version: pkgs.runCommand "odbox-deploy-demo-v${toString version}" { } ''
    mkdir -p $out
    cp -r ${../../tests/deploy/addons}/v${toString version}/odbox_deploy_demo $out/
  '';
  withDemo = version: { odbox.service-stack.odoo.addons = [ pkgs.odoo-addons (demo version) ]; };
  deployStatus = "${pkgs.odbox-deploy}/bin/odbox-deploy status --json --state-dir /var/lib/odbox-deploy";
  psql = "sudo -u postgres psql -d odoo -tAX -c";
in
pkgs.testers.nixosTest {
  name = "odoo-box-stack";
  nodes.box = {
    odbox.server-base.enable = true;
    odbox.vault = { enable = true; backend = "snakeoil"; };
    odbox.login = {
      enable = true;
      adminKeys = [ (builtins.readFile "${pkgs.snakeoil-sec}/ssh/id_ed25519.pub") ];
    };
    odbox.service-stack.odoo.workers = 2;
    odbox.service-stack.odoo.initialModules = [ "base" "odbox_health" "odbox_deploy_demo" ];
    imports = [ module (withDemo 1) ];
    # The deploy step: switch to v2 (applied), then to v3 (rolled back to v2). The rollback
    # goes to the configuration the test saved (a `switch-to-configuration test` makes no
    # generation to go back to).
    odbox.deploy = {
      enable = true;
      rollbackCommand = "systemd-run --no-block --collect --unit odbox-deploy-rollback /run/odbox-good-system/bin/switch-to-configuration test";
    };
    odbox.backup.identityFile = "/var/lib/odbox/backup-identity.txt";
    environment.systemPackages = [ pkgs.age ];
    # mkForce: a specialisation inherits this configuration, and lists would concatenate
    specialisation.v2.configuration.odbox.service-stack.odoo.addons = pkgs.lib.mkForce [ pkgs.odoo-addons (demo 2) ];
    specialisation.v3.configuration.odbox.service-stack.odoo.addons = pkgs.lib.mkForce [ pkgs.odoo-addons (demo 3) ];
    odbox.backup = {
      enable = true;
      repo = "/var/lib/odbox-backups";
      hot = [ ];
    };
    virtualisation = {
      memorySize = 3072;
      diskSize = 4096;
      cores = 2;
    };
  };

  testScript = ''
    box.start()
    box.wait_for_unit("odbox-dbinit.service")
    box.succeed("sudo -u postgres dbinit check")
    # Postgres: no TCP at all
    box.fail("pg_isready -h 127.0.0.1")

    # Odoo installs base and odbox_health at its first start, then answers behind Nginx.
    box.wait_for_unit("odoo.service", timeout=1200)
    box.wait_until_succeeds(
        "curl -sfk https://localhost/odbox/health | grep -q '\"status\": \"pass\"'", timeout=900
    )
    box.succeed("curl -s -o /dev/null -w '%{http_code}' http://localhost/ | grep -qx 301")
    box.succeed("curl -skI https://localhost/web/login | grep -qi '^strict-transport-security: max-age=63072000'")
    # database listing is off, and the admin password is not in the store
    box.fail("curl -sfk -X POST -H 'Content-Type: application/json' -d '{}' https://localhost/web/database/list")
    box.fail("grep -rl \"$(cat /run/odbox-vault/odoo-admin-password)\" /nix/store/*-odoo.conf")
    box.wait_for_unit("pgadmin.service")
    box.wait_until_succeeds("curl -sfk https://localhost/pgadmin4/misc/ping", timeout=300)

    # A backup, a change, a restore through the unit, and the change is gone.
    box.succeed("${backup} init --repo /var/lib/odbox-backups --auth-key-file /var/lib/odbox/backup-auth.key")
    box.succeed("systemctl start odbox-backup-hot.service")
    before = box.succeed("${psql} \"SELECT name FROM res_partner WHERE id = 1\"").strip()
    box.succeed("${psql} \"UPDATE res_partner SET name = 'changed' WHERE id = 1\"")
    box.succeed("systemctl start odbox-backup-restore@latest.service")
    after = box.succeed("${psql} \"SELECT name FROM res_partner WHERE id = 1\"").strip()
    assert after == before, f"{after!r} != {before!r}"
    box.succeed("${backup} verify --repo /var/lib/odbox-backups --auth-key-file /var/lib/odbox/backup-auth.key")
    box.wait_for_unit("odoo.service")
    box.wait_until_succeeds("curl -sfk https://localhost/odbox/health", timeout=300)

    # Deploy: v2 of the demo addon is applied (its new field and record are there), then v3,
    # whose update raises, is rolled back to v2's code and data.
    import json
    demo = "${psql} \"SELECT string_agg(name || ':' || coalesce(colour, '-'), ',' ORDER BY name) FROM odbox_deploy_demo\""
    box.succeed("age-keygen -o /var/lib/odbox/backup-identity.txt")
    box.succeed("/run/current-system/specialisation/v2/bin/switch-to-configuration test")
    box.wait_for_unit("odoo.service", timeout=1200)
    box.wait_until_succeeds("curl -sfk https://localhost/odbox/health", timeout=900)
    assert json.loads(box.succeed("${deployStatus}"))["state"] == "updated"
    assert box.succeed(demo).strip() == "first:-,second:blue"
    box.succeed("ln -sfn $(readlink -f /run/current-system) /run/odbox-good-system")
    box.execute("/run/current-system/specialisation/v3/bin/switch-to-configuration test")
    box.wait_until_succeeds("${deployStatus} | grep -q '\"state\": \"rolled-back\"'", timeout=1800)
    box.wait_until_succeeds("readlink -f /run/current-system | grep -qx $(readlink -f /run/odbox-good-system)", timeout=900)
    box.wait_for_unit("odoo.service", timeout=1200)
    box.wait_until_succeeds("curl -sfk https://localhost/odbox/health", timeout=900)
    assert box.succeed(demo).strip() == "first:-,second:blue"
    box.fail("${psql} \"SELECT size FROM odbox_deploy_demo\"")
    box.succeed("sudo -u postgres psql -tAX -c \"SELECT datname FROM pg_database\" | grep -q '^odoo_before_'")
  '';
}
