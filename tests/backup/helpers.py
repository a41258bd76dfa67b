"""Run the real `odbox-backup` console script with the environment a box would give it."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from odbox_backup.repository import AuthKey, Repository
from odbox_backup.store import LocalStore, S3Store, Store
from odbox_common.age import load_identities
from tests.conftest import MotoServer, PostgresCluster
from tests.helpers import run_tool, tool_path

ODBOX_BACKUP = tool_path("odbox-backup")
# run's cache (odbox_backup.cache) goes here, not into the home folder of whoever runs the tests
CACHE_HOME = tempfile.mkdtemp(prefix="odbox-backup-test-cache-")
# The authentication key every test's box and admin hold (`init` writes it on first use).
AUTH_KEY_FILE = Path(tempfile.mkdtemp(prefix="odbox-backup-test-key-")) / "auth.key"
if not AUTH_KEY_FILE.exists():
    AUTH_KEY_FILE.write_text(AuthKey.generate(str(AUTH_KEY_FILE)).text())


def env_for(postgres: PostgresCluster, moto: MotoServer | None) -> dict[str, str]:
    base = moto.env if moto else dict(os.environ)
    env = {k: v for k, v in base.items() if not k.startswith(("ODBOX_", "PG"))}
    env.update(PGHOST=str(postgres.socket_dir), PGPORT=str(postgres.port), PGUSER="postgres",
               XDG_CACHE_HOME=CACHE_HOME)  # fmt: skip
    env["ODBOX_BACKUP_AUTH_KEY_FILE"] = str(AUTH_KEY_FILE)
    env.pop("CACHE_DIRECTORY", None)
    return env


def backup(env: dict[str, str], *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`odbox-backup ARGS…`; never raises on a non-zero exit."""
    return run_tool("odbox-backup", *args, env=env, **kwargs)


def backup_ok(env: dict[str, str], *args: str) -> str:
    result = backup(env, *args)
    assert result.returncode == 0, f"odbox-backup {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def backup_run(env: dict[str, str], repo: str, odoo: tuple[str, str, Path], *extra: str) -> str:
    """`odbox-backup run` of the `odoo` fixture's database and filestore into `repo`."""
    name, _, filestore = odoo
    return backup_ok(env, "run", "--repo", repo, "--db", name, "--filestore", str(filestore),
                     *extra)  # fmt: skip


def show(env: dict[str, str], repo: str, snapshot: str, *extra: str) -> dict[str, Any]:
    return json.loads(backup_ok(env, "show", "--repo", repo, snapshot, "--json", *extra))  # type: ignore[no-any-return]


def verify_json(env: dict[str, str], repo: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """`odbox-backup verify --json`: its exit status (0, or 3 for problems) and report."""
    result = backup(env, "verify", "--repo", repo, "--json", *extra)
    assert result.returncode in (0, 3), result.stderr
    return result.returncode, json.loads(result.stdout)


def store_for(repo: str, moto: MotoServer | None) -> Store:
    if repo.startswith("s3://"):
        assert moto is not None
        bucket, _, prefix = repo[5:].partition("/")
        return S3Store(bucket, prefix, moto.client("s3"))
    return LocalStore(Path(repo))


def open_repo(repo: str, moto: MotoServer | None, identity: Path | None = None) -> Repository:
    identities = load_identities(identity.read_bytes(), str(identity)) if identity else []
    return Repository.open(store_for(repo, moto), identities, AuthKey.load(AUTH_KEY_FILE))


def dry_prune(
    env: dict[str, str], repo: str, moto: MotoServer | None
) -> tuple[dict[str, Any], list[str], set[str]]:
    """`prune --keep-last 1 --dry-run --json`'s report, and the snapshot IDs and objects
    the repository held before it."""
    before = open_repo(repo, moto)
    ids, objects = before.snapshot_ids(), set(before.known_objects())
    out = backup_ok(env, "prune", "--repo", repo, "--keep-last", "1", "--dry-run", "--json")
    return json.loads(out), ids, objects


def make_odoo(postgres: PostgresCluster, name: str, filestore: Path, shape: Any, seed: int) -> str:
    """A new database `name` with Odoo-shaped data and its filestore; its DSN."""
    import psycopg

    from tests.odoo_data import create_schema, fill

    postgres.psql(f"DROP DATABASE IF EXISTS {name}")
    postgres.psql(f"CREATE DATABASE {name}")
    dsn = postgres.dsn.replace("dbname=postgres", f"dbname={name}")
    with psycopg.connect(dsn) as conn:
        create_schema(conn)
        fill(conn, filestore, shape, seed=seed)
    return dsn


def db_dsn(postgres: PostgresCluster, db: str) -> str:
    return postgres.dsn.replace("dbname=postgres", f"dbname={db}")


def odoo_state(dsn: str, filestore: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Every table's checksum and every file's digest: what a restore must bring back."""
    import psycopg

    from tests.odoo_data import filestore_digest, table_checksums

    with psycopg.connect(dsn) as conn:
        return table_checksums(conn), filestore_digest(filestore)


def key_holding(store: Store, name: str) -> str:
    """The repository key that holds object `name`: `objects/…` when it is stored alone,
    else the pack its index places it in (FORMAT.md, "Packs")."""
    alone = f"objects/{name[:2]}/{name}"
    if store.exists(alone):
        return alone
    for index in pack_indexes(store).values():
        if any(blob[0] == name for blob in index["blobs"]):
            return f"packs/{index['pack'][:2]}/{index['pack']}"
    raise AssertionError(f"object {name[:12]}… is in no pack and not alone")


def odoo_service(tmp_path: Path) -> tuple[Path, list[str]]:
    """--odoo-stop and --odoo-start commands that write `stop` and `start` to a log; the log."""
    log = tmp_path / "service.log"
    return log, ["--odoo-stop", f"sh -c 'echo stop >> {log}'",
                 "--odoo-start", f"sh -c 'echo start >> {log}'"]  # fmt: skip


def snapshot_then_change(
    env: dict[str, str], tmp_path: Path, odoo: tuple[str, str, Path], *run_args: str
) -> tuple[str, Any, Any]:
    """A folder repository with one snapshot of `odoo` (`run` with `run_args`), then its
    partners changed: (the repository, the state the snapshot holds, the live state now)."""
    import psycopg

    _, dsn, filestore = odoo
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_run(env, repo, odoo, *run_args)
    at_backup = odoo_state(dsn, filestore)
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE res_partner SET city = 'after the backup'")
    return repo, at_backup, odoo_state(dsn, filestore)


def stand_in(folder: Path, tool: str, script: str) -> None:
    """An executable shell script `folder/tool` (for --pg-bin)."""
    folder.mkdir(exist_ok=True)
    (folder / tool).write_text(f"#!/bin/sh\n{script}")
    (folder / tool).chmod(0o755)


def authenticated_body(data: bytes) -> bytes:
    """What follows the MAC line of an authenticated file (FORMAT.md, "Authentication")."""
    header, _, body = data.partition(b"\n")
    assert header.startswith(b"odbox-auth-v1 "), header[:40]
    return body


def pack_indexes(store: Store) -> dict[str, dict[str, Any]]:
    """Key → JSON of every pack's index (not the indexes of objects stored alone)."""
    documents = {key: json.loads(authenticated_body(store.get(key))) for key in store.list("index")}
    return {key: doc for key, doc in documents.items() if "pack" in doc}
