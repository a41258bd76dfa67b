# The NixOS VM test (flake checks.<system>.stack): the service stack with the
# snakeoil vault boots, Odoo answers behind Nginx, a backup is taken, the data
# changes, and the restore unit brings it back. Needs KVM: run it with
# `nix build .#checks.x86_64-linux.stack -L` on a Linux machine (not on our CI).
{ pkgs, module }:
let
  backup = "${pkgs.odbox-backup}/bin/odbox-backup";
  psql = "sudo -u postgres psql -d odoo -tAX -c";
in
pkgs.testers.nixosTest {
  name = "odoo-box-stack";
  nodes.box = {
    imports = [ module ];
    odbox.server-base.enable = true;
    odbox.vault = { enable = true; backend = "snakeoil"; };
    odbox.login = {
      enable = true;
      adminKeys = [ (builtins.readFile "${pkgs.snakeoil-sec}/ssh/id_ed25519.pub") ];
    };
    odbox.service-stack.odoo.workers = 2;
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
  '';
}
