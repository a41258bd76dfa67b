"""Fixtures for odbox-backup: the same tests run against a local folder and an S3 prefix on moto."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from odbox_backup.store import LocalStore, S3Store, Store
from tests.conftest import MotoServer


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
