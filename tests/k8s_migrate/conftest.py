"""Fixtures for k8s-migrate: an emulated Kubernetes API that the real `kubernetes` client uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.k8s_migrate.emulator import K8sEmulator


@pytest.fixture
def k8s() -> Iterator[K8sEmulator]:
    """An empty emulated cluster on 127.0.0.1 (`k8s.kubeconfig`: context `test`), stopped after."""
    with K8sEmulator() as emulator:
        yield emulator


from tests.k8s_migrate.shop import shop  # noqa: E402, F401 (the fixture, for every test here)
