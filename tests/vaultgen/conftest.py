"""Fixtures for vaultgen's tests: one generated vault per session, copied fresh for each test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.vaultgen.helpers import vaultgen_ok


@pytest.fixture(scope="session")
def template_vault(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "vault"
    vaultgen_ok(root, "generate", "--batch")
    return root


@pytest.fixture
def vault(template_vault: Path, tmp_path: Path) -> Path:
    """A complete vault of this test's own (a byte-for-byte copy, mtimes and modes kept)."""
    root = tmp_path / "vault"
    shutil.copytree(template_vault, root, symlinks=True)
    return root


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.fixture
def vault_in_git(vault: Path) -> Path:
    """The vault as the `vault/` folder of a git repository, like the seeds' layout."""
    git(vault.parent, "init", "-q")
    return vault
