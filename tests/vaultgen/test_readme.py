"""Every ```sh example of tools/vaultgen/README.md runs, in order, in one fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.vaultgen.helpers import VAULTGEN, clean_env

README = Path(__file__).resolve().parents[2] / "tools/vaultgen/README.md"


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)


def test_every_example_in_the_readme_runs(tmp_path):
    blocks = sh_blocks(README.read_text())
    assert len(blocks) >= 6
    env = clean_env(
        PATH=f"{VAULTGEN.parent}{os.pathsep}{os.environ['PATH']}",
        GIT_AUTHOR_NAME="doc", GIT_AUTHOR_EMAIL="doc@localhost",
        GIT_COMMITTER_NAME="doc", GIT_COMMITTER_EMAIL="doc@localhost",
    )  # fmt: skip
    for number, block in enumerate(blocks, start=1):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.returncode == 0, f"example {number} failed:\n{block}\n{result.stderr}"
    committed = subprocess.run(
        ["git", "ls-files", "vault"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    assert all(p.endswith((".age", ".pub", "manifest.json", ".gitignore")) for p in committed)
    assert (tmp_path / "run/odoo-admin").stat().st_mode & 0o777 == 0o400
