"""The one line a failure prints: what was wrong, where, and what to do; and its exit code."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess

from tests.helpers import one_error_line
from tests.k8s_migrate.proxy import HttpProxy
from tests.k8s_migrate.shop import K8S_MIGRATE, NS, Shop, changes, is_tar


def test_a_missing_kubeconfig_names_the_files_tried(shop: Shop) -> None:
    missing = shop.tmp / "nope.yaml"
    done = shop.migrate("plan", *shop.args("--repo", str(shop.repo), "--kubeconfig",
                                           str(missing)))  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert one_error_line(done).endswith(
        f"cannot use the kubeconfig: no kubeconfig at {missing} (--kubeconfig); "
        "pick one with --kubeconfig FILE or $KUBECONFIG"
    )
    env = {k: v for k, v in shop.env.items() if k != "KUBECONFIG"} | {"HOME": str(shop.tmp)}
    done = subprocess.run([str(K8S_MIGRATE), "plan", *shop.args("--repo", str(shop.repo))],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"no kubeconfig at {shop.tmp}/.kube/config (the default); pick one with " in (
        one_error_line(done)
    )


def test_an_unreachable_server_and_refused_credentials_are_one_plain_line(shop: Shop) -> None:
    config = json.loads(shop.k8s.kubeconfig.read_text())
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    unreachable = shop.tmp / "unreachable.json"
    unreachable.write_text(json.dumps(config))
    done = shop.migrate("pull", *shop.args("--repo", str(shop.repo), "--kubeconfig",
                                           str(unreachable)))  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert one_error_line(done).endswith(
        f"error: cannot reach the API server at http://127.0.0.1:{port}: connection refused "
        "(check --context / the kubeconfig's server)"
    )
    config = json.loads(shop.k8s.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "expired"
    expired = shop.tmp / "expired.json"
    expired.write_text(json.dumps(config))
    done = shop.migrate("plan", *shop.args("--repo", str(shop.repo), "--kubeconfig",
                                           str(expired)))  # fmt: skip
    assert done.returncode == 1, done.stderr
    line = one_error_line(done)
    assert "401 Unauthorized" in line
    assert line.endswith("the kubeconfig's credentials for context test were refused "
                         "(expired token?)")  # fmt: skip


def test_an_absolute_filestore_path_under_the_mount_path_is_taken_inside_the_pvc(
    shop: Shop,
) -> None:
    done = shop.pull("--filestore-path", f"/var/lib/odoo/filestore/{shop.db}/", "--scale-back")
    assert done.returncode == 0, done.stderr
    assert (
        f"--filestore-path /var/lib/odoo/filestore/{shop.db}/ is under the Odoo pod's mount "
        f"path /var/lib/odoo of PVC odoo-data: taken as filestore/{shop.db} inside the PVC"
    ) in done.stdout
    assert f"tar of filestore/{shop.db}/ in helper pod" in done.stdout
    before = len(shop.k8s.requests)
    for command in ("plan", "pull"):
        done = shop.migrate(command, *shop.args("--repo", str(shop.repo), "--filestore-path",
                                                f"/srv/filestore/{shop.db}"))  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert one_error_line(done).endswith(
            f"error: --filestore-path is a path inside the PVC (e.g. filestore/{shop.db}), or "
            "under the Odoo pod's mount path /var/lib/odoo"
        )
    assert changes(shop.k8s.requests[before:]) == []


def test_interrupted_during_preflight_says_nothing_was_changed(shop: Shop) -> None:
    """psql in the database pod hangs (preflight asks it for the database's size)."""
    started = shop.tmp / "psql-started"
    bin_dir = shop.tmp / "bin-hang"
    bin_dir.mkdir()
    (bin_dir / "psql").write_text(f"#!/bin/sh\ntouch {started}\nexec sleep 60\n")
    (bin_dir / "psql").chmod(0o755)
    shop.k8s.add_pod(NS, "hang-0", {"app": "postgres"}, containers=["postgres"],
                     env={**shop.pg_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
                     image="postgres:15")  # fmt: skip
    args = shop.args("--repo", str(shop.repo))
    args[args.index("--db-pod") + 1] = "hang-0"
    child = shop.pull_until(args, started)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, out + err
    line = one_error_line(subprocess.CompletedProcess(child.args, 130, out, err))
    assert line.endswith("error: interrupted before anything was changed; no snapshot was written")
    assert changes(shop.k8s.requests) == []
    assert shop.k8s.replicas(NS, "odoo") == 2


def test_the_namespace_defaults_to_the_kubeconfig_contexts_as_kubectl_does(shop: Shop) -> None:
    args = shop.args("--repo", str(shop.repo))
    del args[args.index("--namespace") : args.index("--namespace") + 2]
    config = shop.k8s.kubeconfig_with(shop.tmp / "ns-config", context={"namespace": NS})
    done = shop.migrate("plan", *args, "--kubeconfig", str(config))
    assert done.returncode == 0, done.stderr
    assert "scale deployment shop/odoo from 2 to 0" in done.stdout
    done = shop.migrate("plan", *args)  # a context without one: `default`, as kubectl
    assert done.returncode == 2
    assert "there is no namespace default in context test" in one_error_line(done)


def test_a_pg_dump_older_than_the_server_is_found_by_plan_before_odoo_stops(shop: Shop) -> None:
    """pg_dump refuses a server of a later major version: plan says so, and a pull stops
    before it scales Odoo down (it used to find out from pg_dump, with Odoo at 0)."""
    server = int(shop.postgres.psql("SHOW server_version_num").strip())
    older = server // 10000 - 1
    bin_dir = shop.tmp / "old-bin"
    bin_dir.mkdir()
    (bin_dir / "pg_dump").write_text(f"#!/bin/sh\necho 'pg_dump (PostgreSQL) {older}.9'\n")
    (bin_dir / "pg_dump").chmod(0o755)
    env = {**shop.pg_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    shop.k8s.add_pod(NS, "old-0", {"app": "postgres"}, containers=["postgres"], env=env)
    args = shop.args("--repo", str(shop.repo))
    args[args.index("--db-pod") + 1] = "old-0"
    for command in ("plan", "pull"):
        done = shop.migrate(command, *args)
        assert done.returncode == 2, done.stderr
        line = one_error_line(done)
        assert f"pg_dump (PostgreSQL) {older}.9 in pod old-0 cannot dump its server" in line
        assert f"must be of major version {server // 10000} or later" in line
    assert shop.k8s.replicas(NS, "odoo") == 2
    assert changes(shop.k8s.requests) == []


def test_plan_shows_pg_dump_and_server_versions(shop: Shop) -> None:
    done = shop.migrate("plan", *shop.args("--repo", str(shop.repo)))
    assert done.returncode == 0, done.stderr
    server = shop.postgres.psql("SHOW server_version").split()[0]
    assert f", server {server}; database " in done.stdout
    # a dropped dump stream is not resumed: plan says what taking it again costs
    assert re.search(r"a dump cut short is taken again from its start: [\d.]+ [KMG]iB again, "
                     r"about \d+ s at 20 MB/s", done.stdout), done.stdout  # fmt: skip


def test_the_time_a_dump_restart_costs_is_in_minutes_and_hours_when_large() -> None:
    from k8s_migrate.plan import _duration

    assert [_duration(s) for s in (0.2, 89, 600, 7200)] == ["1 s", "89 s", "10 min", "2.0 h"]


def test_an_expired_login_mid_pull_is_one_line_with_the_plugins_words_and_the_commands(
    shop: Shop,
) -> None:
    """An exec credential plugin (aws eks get-token, say) whose SSO login expires while the
    filestore comes: the client used to print an `ERROR:root:exec: …` line for each request
    and the pull left Odoo at 0. Now: one line, with the plugin's own message, and the
    commands that put the cluster back."""
    config = shop.k8s.exec_plugin_kubeconfig(shop.tmp / "sso-config")
    shop.k8s.on_exec(is_tar, shop.k8s.expire_login)
    done = shop.migrate("pull", *shop.args("--repo", str(shop.repo), "--kubeconfig",
                                           str(config)))  # fmt: skip
    assert done.returncode == 1, done.stderr
    line = one_error_line(done)
    assert "ERROR:root" not in done.stdout + done.stderr
    assert "401 Unauthorized" in line and "were refused" in line
    assert line.count("its exec credential plugin failed: exec: process returned 255. Error "
                      "loading SSO Token: Token for example does not exist") == 1  # fmt: skip
    assert "run `kubectl -n shop delete pod k8s-migrate-" in line
    assert line.endswith("run `kubectl -n shop scale deployment odoo --replicas=2`")
    assert shop.snapshots() == []


def test_the_kubeconfigs_http_proxy_url_is_used_and_socks_is_refused_clearly(shop: Shop) -> None:
    """The official client ignores a cluster's proxy-url (kubectl honours it): REST calls and
    exec both go through it now; a SOCKS proxy is one usage line, not a silent bypass."""
    with HttpProxy() as proxy:
        config = shop.k8s.kubeconfig_with(shop.tmp / "proxied", cluster={"proxy-url": proxy.url})
        done = shop.migrate("plan", *shop.args("--repo", str(shop.repo), "--kubeconfig",
                                               str(config)))  # fmt: skip
        assert done.returncode == 0, done.stderr
        methods = {line.split(" ")[0] for line in proxy.requests}
        assert {"GET", "CONNECT"} <= methods, proxy.requests  # REST calls, and exec's tunnel
    config = shop.k8s.kubeconfig_with(shop.tmp / "socks",
                                      cluster={"proxy-url": "socks5://127.0.0.1:1080"})  # fmt: skip
    done = shop.migrate("plan", *shop.args("--repo", str(shop.repo), "--kubeconfig", str(config)))
    assert done.returncode == 2
    line = one_error_line(done)
    assert "has proxy-url socks5://127.0.0.1:1080: k8s-migrate supports HTTP proxies only" in line


def test_a_db_pod_of_odoos_own_deployment_is_refused(shop: Shop) -> None:
    """With no database pod (RDS, Cloud SQL), an Odoo pod has psql and pg_dump, and reaches
    the server: but the pull scales it away, so it is refused before anything changes."""
    odoo = next(p["metadata"]["name"] for p in shop.k8s.pods(NS)
                if p["metadata"]["name"].startswith("odoo-"))  # fmt: skip
    args = shop.args("--repo", str(shop.repo))
    args[args.index("--db-pod") + 1] = odoo
    args[args.index("--db-container") + 1] = "odoo"
    done = shop.migrate("pull", *args)
    assert done.returncode == 2, done.stderr
    assert f"pod {odoo} is one of deployment odoo's own pods" in one_error_line(done)
    assert changes(shop.k8s.requests) == []
