"""Bitnami's charts: a Postgres container whose uid has no name, a password in a Secret,
and the filestore in data/filestore/<db>."""

from __future__ import annotations

import os
import shlex
import shutil

from tests.backup.helpers import odoo_state
from tests.helpers import one_error_line
from tests.k8s_migrate.shop import NS, Shop, changes

PASSWORD = "s3cret pw; $(not run)"


def _bitnami_pod(shop: Shop, name: str, *, password: str | None) -> None:
    """A database pod like Bitnami's postgresql: psql and pg_dump without -U fail as libpq
    does for a uid with no name; with `password`, they want it in PGPASSWORD as md5/scram
    on the socket would (else the server's refusal)."""
    bin_dir = shop.tmp / f"bin-{name}"
    bin_dir.mkdir()
    for tool in ("psql", "pg_dump"):
        real = shutil.which(tool)
        assert real is not None
        check = (
            f'[ "$PGPASSWORD" = {shlex.quote(password)} ] || {{ echo "{tool}: error: '
            'connection to server on socket \\"/tmp/.s.PGSQL.5432\\" failed: FATAL:  password '
            f'authentication failed for user \\"postgres\\"" >&2; exit 2; }}\n'
            if password is not None
            else ""
        )
        (bin_dir / tool).write_text(
            "#!/bin/sh\n"
            f'for a; do [ "$a" = --version ] && exec {real} --version; done\n'
            'user=; for a; do [ "$a" = -U ] && user=1; done\n'
            f'[ -n "$user" ] || {{ echo "{tool}: error: local user with ID 1001 does not '
            'exist" >&2; exit 2; }\n'
            f"{check}"
            f'exec {real} "$@"\n'
        )
        (bin_dir / tool).chmod(0o755)
    env = {**shop.pg_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    shop.k8s.add_pod(NS, name, {"app": "postgresql"}, containers=["postgresql"], env=env,
                     image="bitnami/postgresql:16")  # fmt: skip


def _args(shop: Shop, pod: str, *extra: str) -> list[str]:
    args = shop.args("--repo", str(shop.repo), *extra)
    args[args.index("--db-pod") + 1] = pod
    args[args.index("--db-container") + 1] = "postgresql"
    return args


def test_a_container_user_with_no_name_asks_for_db_user(shop: Shop) -> None:
    _bitnami_pod(shop, "bitnami-0", password=None)
    done = shop.migrate("pull", *_args(shop, "bitnami-0"))
    assert done.returncode == 2, done.stderr
    line = one_error_line(done)
    assert "local user with ID 1001 does not exist: the container runs as a user with no " in (line)
    assert "give --db-user (e.g. postgres)" in line
    assert changes(shop.k8s.requests) == []
    user = shop.pg_env().get("PGUSER", "postgres")
    done = shop.migrate("pull", *_args(shop, "bitnami-0", "--db-user", user))
    assert done.returncode == 0, done.stderr


def test_the_password_comes_from_a_secret_on_stdin_never_in_a_command_line(shop: Shop) -> None:
    _bitnami_pod(shop, "bitnami-0", password=PASSWORD)
    user = shop.pg_env().get("PGUSER", "postgres")
    done = shop.migrate("pull", *_args(shop, "bitnami-0", "--db-user", user))
    assert done.returncode == 2, done.stderr
    assert "the server asks for a password: give --db-password-secret NAME/KEY" in (
        one_error_line(done)
    )
    done = shop.migrate("plan", *_args(shop, "bitnami-0", "--db-user", user,
                                        "--db-password-secret", "shop-postgresql/x"))  # fmt: skip
    assert done.returncode == 2
    assert "there is no secret shop-postgresql in namespace shop" in one_error_line(done)

    shop.k8s.add_secret(NS, "shop-postgresql", {"postgres-password": PASSWORD})
    secret = "shop-postgresql/password"
    done = shop.migrate("plan", *_args(shop, "bitnami-0", "--db-user", user,
                                        "--db-password-secret", secret))  # fmt: skip
    assert done.returncode == 2
    assert "secret shop/shop-postgresql has no key password (its keys: postgres-password;" in (
        one_error_line(done)
    )
    source = odoo_state(shop.dsn, shop.filestore)
    done = shop.migrate("pull", *_args(shop, "bitnami-0", "--db-user", user,
                                        "--db-password-secret",
                                        "shop-postgresql/postgres-password"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert shop.restore(f"{shop.db}_restored", shop.tmp / "restored") == source
    assert PASSWORD not in done.stdout + done.stderr
    assert not [r for r in shop.k8s.exec_log if PASSWORD in " ".join(r.command)]
    assert not [r for r in shop.k8s.requests if PASSWORD in str(r.query)]
    fed = [r for r in shop.k8s.exec_log if r.pod == "bitnami-0" and r.stdin_bytes]
    assert fed and all(r.stdin_bytes == len(PASSWORD) + 1 for r in fed)


def test_a_wrong_filestore_path_shows_the_pvc_and_bitnamis_folder(shop: Shop) -> None:
    pvc = shop.filestore.parent.parent
    (pvc / "data").mkdir()
    (pvc / "filestore").rename(pvc / "data" / "filestore")
    (pvc / "lost+found").mkdir()
    for command in ("plan", "pull"):
        done = shop.migrate(command, *shop.args("--repo", str(shop.repo)))
        assert done.returncode == 2, done.stderr
        assert one_error_line(done).endswith(
            f"no folder filestore/{shop.db} in PVC odoo-data (it holds: data/, lost+found/); "
            f"data/filestore/{shop.db} is there: pass --filestore-path data/filestore/{shop.db}"
        )
    assert changes(shop.k8s.requests) == []
    done = shop.pull("--filestore-path", f"data/filestore/{shop.db}")
    assert done.returncode == 0, done.stderr
