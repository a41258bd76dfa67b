"""Each dbinit test module gets a cluster of its own: roles are cluster-wide; setup changes them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import PostgresCluster, start_postgres_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with start_postgres_cluster() as c:
        yield c
