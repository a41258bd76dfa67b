"""The database: a server with no pod (RDS, Cloud SQL; --db-host, pg_dump in the helper pod),
and a dump stream that loses its end while the exec still ends with Success."""

from __future__ import annotations

import os
import time

import psycopg
import pytest

from tests.backup.helpers import odoo_state
from tests.helpers import one_error_line
from tests.k8s_migrate.shop import ANNOTATION, NS, PULLING, Shop, changes, is_dump

HOST = "shop.c9akciq32.eu-west-1.rds.amazonaws.com"
ROLE = "k8s_rds"
PASSWORD = "rds pw; $(not run) 'x'"
HELPERS = {"app.kubernetes.io/name": "k8s-migrate"}


def _rds(shop: Shop, reachable: dict[str, str] | None = None) -> list[str]:
    """The shop's database as a managed server would serve it: a role that must give its
    password (scram on the socket, from pg_hba.conf), reachable from the helper pods only
    (or the pods `reachable` selects), at HOST:5432; its password in the Secret rds/password.
    No database pod is used. The arguments of a pull of it."""
    pg = shop.postgres
    if not pg.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'"):
        pg.psql(f"CREATE ROLE {ROLE} LOGIN SUPERUSER")
    quoted = PASSWORD.replace("'", "''")
    pg.psql(f"ALTER ROLE {ROLE} PASSWORD '{quoted}'")
    hba = pg.datadir / "pg_hba.conf"
    line = f"local all {ROLE} scram-sha-256\n"
    if line not in hba.read_text():
        hba.write_text(line + hba.read_text())
        pg.psql("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 60  # the reload is a signal: wait until it took effect
    while True:
        try:
            psycopg.connect(f"host={pg.socket_dir} port={pg.port} user={ROLE} dbname={shop.db}",
                            connect_timeout=10).close()  # fmt: skip
        except psycopg.OperationalError:
            break
        assert time.monotonic() < deadline, "pg_hba.conf's scram line did not take effect"
        time.sleep(0.1)
    shop.k8s.add_secret(NS, "rds", {"password": PASSWORD})
    shop.k8s.add_db_host(HOST, 5432, pg.socket_dir, pg.port, reachable=reachable or HELPERS)
    args = shop.args("--repo", str(shop.repo), "--db-user", ROLE,
                     "--db-password-secret", "rds/password")  # fmt: skip
    at = args.index("--db-pod")
    args[at : at + 4] = ["--db-host", HOST]  # no --db-pod, no --db-container
    return args


def _assert_nothing_left(shop: Shop) -> None:
    """No snapshot, no helper pod, Odoo at its 2 replicas, no annotation of ours."""
    shop.assert_put_back(replicas=2)
    assert shop.snapshots() == []
    assert shop.annotations().keys().isdisjoint({ANNOTATION, PULLING})


def test_a_database_with_no_pod_is_dumped_from_the_helper_pod(shop: Shop) -> None:
    args = _rds(shop)
    source = odoo_state(shop.dsn, shop.filestore)
    plan = shop.migrate("plan", *args)
    assert plan.returncode == 0, plan.stderr
    assert f"run `pg_dump -h {HOST} -p 5432 -U {ROLE} {shop.db}` in the helper pod" in plan.stdout
    assert changes(shop.k8s.requests) == []

    done = shop.migrate("pull", *args)
    assert done.returncode == 0, done.stderr
    assert shop.restore(f"{shop.db}_restored", shop.tmp / "restored") == source
    ran = [r for r in shop.k8s.exec_log if "psql" in r.command or "pg_dump" in r.command]
    assert ran and {r.pod[:12] for r in ran} == {"k8s-migrate-"}, ran  # no DB pod, no Odoo pod
    assert not [r for r in shop.k8s.exec_log if PASSWORD in " ".join(r.command)]
    assert PASSWORD not in done.stdout + done.stderr
    # pg_dump and the connection were checked in the helper pod before Odoo was scaled down
    paths = [f"{r.method} {r.path}" for r in shop.k8s.requests]
    first_exec = next(i for i, p in enumerate(paths) if "/pods/k8s-migrate-" in p and "/exec" in p)
    scaled = next(i for i, p in enumerate(paths) if p.endswith("/deployments/odoo/scale"))
    assert first_exec < scaled


@pytest.mark.parametrize("fault", ["old pg_dump", "wrong password", "unreachable"])
def test_a_database_the_helper_pod_cannot_dump_stops_the_pull_before_odoo_does(
    shop: Shop, fault: str
) -> None:
    """Found in the helper pod while Odoo still runs: one line, nothing left behind."""
    args = _rds(shop, reachable={"app": "odoo"} if fault == "unreachable" else None)
    server = int(shop.postgres.psql("SHOW server_version_num")) // 10000
    if fault == "old pg_dump":
        bin_dir = shop.tmp / "pg14-bin"
        bin_dir.mkdir()
        (bin_dir / "pg_dump").write_text(
            f"#!/bin/sh\necho 'pg_dump (PostgreSQL) {server - 1}.11'\n"
        )
        (bin_dir / "pg_dump").chmod(0o755)
        shop.k8s.image_env(f"postgres:{server - 1}",
                           {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})  # fmt: skip
        args += ["--helper-image", f"postgres:{server - 1}"]
        code, said = (
            2,
            (
                f"pg_dump (PostgreSQL) {server - 1}.11 in helper pod shop/k8s-migrate-",
                f"cannot dump its server, PostgreSQL {server}.",
                f"give --helper-image an image with pg_dump {server} or later, e.g. "
                f"postgres:{server}",
            ),
        )
    elif fault == "wrong password":
        shop.k8s.add_secret(NS, "rds-old", {"password": "not it"})
        args[args.index("rds/password")] = "rds-old/password"
        code, said = (
            2,
            (
                f"cannot connect to database {shop.db} in {HOST}:5432 from helper pod "
                "shop/k8s-migrate-",
                "the password of --db-password-secret was refused",
            ),
        )
    else:
        code, said = (
            1,
            (
                f"cannot reach database {shop.db} at {HOST}:5432 from helper pod shop/k8s-migrate-",
                "timeout expired",  # no answer at all: libpq gives up after PGCONNECT_TIMEOUT
                f"the helper pod must reach {HOST}:5432 (a NetworkPolicy that admits only Odoo",
            ),
        )
    done = shop.migrate("pull", *args)
    assert done.returncode == code, done.stderr
    line = one_error_line(done)
    for text in said:
        assert text in line, line
    assert not [r for r in shop.k8s.requests if r.path.endswith("/deployments/odoo/scale")]
    _assert_nothing_left(shop)


def test_db_host_usage_errors_change_nothing(shop: Shop) -> None:
    args = shop.args("--repo", str(shop.repo))
    no_pod = [a for a in args if a not in ("--db-pod", "postgres-0", "--db-container", "postgres")]
    for given, said in (
        ([*args, "--db-host", HOST], "give one of --db-pod POD and --db-host HOST"),
        ([*no_pod, "--db-host", "127.0.0.1"], "--db-host 127.0.0.1 would be the helper pod"),
    ):
        done = shop.migrate("pull", *given)
        assert done.returncode == 2, done.stderr
        assert said in one_error_line(done)
    assert changes(shop.k8s.requests) == []


@pytest.mark.parametrize("output", ["repo", "zip"])
def test_a_dump_cut_short_that_still_ends_with_success_writes_nothing(
    shop: Shop, output: str
) -> None:
    """kubernetes issue 124571: the end of stdout is lost, the exec ends with Success. The
    count made in the pod does not match what arrived: no snapshot (or zip), Odoo put back."""
    shop.k8s.truncate_exec(is_dump, after_bytes=100_000)
    out = shop.tmp / "odoo.zip"
    extra = ["--repo", str(shop.repo)] if output == "repo" else ["--odoo-zip", str(out)]
    done = shop.migrate("pull", *shop.args(*extra))
    assert done.returncode == 1, done.stderr
    line = one_error_line(done)
    assert f"the dump of {shop.db} from pod shop/postgres-0 was cut short: 100000 of the " in line
    assert "though the exec ended with Success (kubernetes issue 124571); no snapshot" in line
    dumps = [r for r in shop.k8s.exec_log if is_dump(r)]
    assert [(r.stdout_bytes, r.exit_code) for r in dumps] == [(100_000, 0)]
    _assert_nothing_left(shop)
    assert not out.exists() and not list(shop.tmp.glob(".odoo.zip.tmp-*"))
