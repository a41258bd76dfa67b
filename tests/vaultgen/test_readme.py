"""Every ```sh example of tools/vaultgen/README.md runs, in order, in one fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.helpers import run_sh_examples
from tests.vaultgen.helpers import VAULTGEN, clean_env

README = Path(__file__).resolve().parents[2] / "tools/vaultgen/README.md"


def test_every_example_in_the_readme_runs(tmp_path):
    env = clean_env(
        PATH=f"{VAULTGEN.parent}{os.pathsep}{os.environ['PATH']}",
        GIT_AUTHOR_NAME="doc", GIT_AUTHOR_EMAIL="doc@localhost",
        GIT_COMMITTER_NAME="doc", GIT_COMMITTER_EMAIL="doc@localhost",
    )  # fmt: skip
    run_sh_examples(README, tmp_path, env, at_least=6)
    committed = subprocess.run(
        ["git", "ls-files", "vault"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    assert all(p.endswith((".age", ".pub", "manifest.json", ".gitignore")) for p in committed)
    assert (tmp_path / "run/odoo-admin").stat().st_mode & 0o777 == 0o400


def test_the_readme_gives_the_ca_the_path_length_it_has(vault):
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "basicConstraints",
         "-in", vault / "certs/vault-ca-cert.pem"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    pathlen = re.search(r"pathlen:(\d+)", text)
    assert pathlen is not None, text
    assert f"CA:TRUE, pathlen {pathlen.group(1)}" in README.read_text()
