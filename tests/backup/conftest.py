"""Fixtures for odbox-backup: the same tests run against a local folder and an S3 prefix on moto."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from odbox_backup.store import LocalStore, S3Store, Store
from tests.backup.helpers import AUTH_KEY_FILE, env_for, make_odoo
from tests.conftest import MotoServer, PostgresCluster
from tests.odoo_data import Shape


@pytest.fixture(autouse=True)
def auth_key(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tests' authentication key, also for repositories opened in the test's process."""
    monkeypatch.setenv("ODBOX_BACKUP_AUTH_KEY_FILE", str(AUTH_KEY_FILE))
    return AUTH_KEY_FILE


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty repository location: a folder, or s3://<new bucket>/repo on moto."""
    if request.param == "local":
        return str(tmp_path / "repo")
    moto: MotoServer = request.getfixturevalue("moto_server")
    bucket = f"odbox-{secrets.token_hex(6)}"
    moto.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/repo"


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest) -> Store:
    if backend.startswith("s3://"):
        moto: MotoServer = request.getfixturevalue("moto_server")
        bucket, _, prefix = backend[5:].partition("/")
        return S3Store(bucket, prefix, moto.client("s3"))
    return LocalStore(Path(backend))


def moto_for(backend: str, request: pytest.FixtureRequest) -> MotoServer | None:
    """The moto server when `backend` is on S3."""
    if backend.startswith("s3://"):
        moto: MotoServer = request.getfixturevalue("moto_server")
        return moto
    return None


@pytest.fixture
def env(postgres: PostgresCluster, backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment a box gives odbox-backup: PG* for the cluster, AWS_* for moto."""
    return env_for(postgres, moto_for(backend, request))


@pytest.fixture
def local_env(postgres: PostgresCluster) -> dict[str, str]:
    """`env` for a test that only needs a folder repository: it runs once, not per backend."""
    return env_for(postgres, None)


@pytest.fixture
def odoo(
    postgres: PostgresCluster, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, str, Path]]:
    """A fresh Odoo-shaped database and filestore for this test; (name, dsn, filestore).

    Dropped afterwards with every database a restore made next to it.
    """
    name = f"odoo_{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]}"  # noqa: S324
    filestore = tmp_path / "live" / "filestore"
    dsn = make_odoo(postgres, name, filestore, Shape.small(), seed=4)
    yield name, dsn, filestore
    made = postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}%'")
    for db in made.splitlines():
        postgres.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture
def owner_role(postgres: PostgresCluster) -> str:
    """An unprivileged login role to own restored databases, as `odoo` does on the box."""
    if not postgres.psql("SELECT 1 FROM pg_roles WHERE rolname = 'odoo_owner'"):
        postgres.psql("CREATE ROLE odoo_owner LOGIN")
    return "odoo_owner"
