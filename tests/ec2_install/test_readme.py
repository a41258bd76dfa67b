"""Every ```sh example of tools/ec2-install/README.md runs, in order, against moto server,
from a fresh checkout: vaultgen makes the vault, `up` installs over SSH to the box_ssh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ec2_install import policy
from tests.ec2_install.conftest import Aws, BoxSsh
from tests.helpers import run_sh_examples

README = Path(__file__).resolve().parents[2] / "tools/ec2-install/README.md"


def test_every_example_in_the_readme_runs(aws: Aws, box_ssh: BoxSsh, tmp_path: Path) -> None:
    ssh = aws.home / ".ssh"
    ssh.mkdir(mode=0o700)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", ssh / "id_ed25519"], check=True
    )
    (box_ssh.dir / "authorized_keys").write_text((ssh / "id_ed25519.pub").read_text())
    repo = tmp_path / "odoo-box"
    repo.mkdir()
    (repo / "flake.nix").write_text("{ outputs = _: { }; }\n")
    aws.proxy.console = box_ssh.fingerprints()
    env = box_ssh.env(aws)
    env["PATH"] = f"{env['PATH']}{os.pathsep}{Path(sys.executable).parent}"
    _vault, amis, plan, up, status, down = run_sh_examples(README, repo, env, at_least=6)
    assert (repo / "vault" / "age.key").exists()
    assert "nixos/25.05.813814.9e7a3a27bbf3-aarch64-linux" in amis and "x86_64-linux" not in amis
    assert "nothing was changed" in plan and "launch m6g.xlarge (arm64)" in plan
    assert f"--flake {repo}#ec2-aarch64 --target-host" in plan
    assert "box shop is up" in up and "/odbox/health passes through Nginx" in up
    assert box_ssh.switches() == ["switch key=present"]
    key = box_ssh.root / "var/lib/odbox/age.key"
    assert key.read_bytes() == (repo / "vault" / "age.key").read_bytes()
    assert "box shop in eu-west-1: running" in status
    assert json.loads((repo / "shop.json").read_text())["state"] == "running"
    assert "box shop is down" in down and "kept the backup volume" in down
    assert json.loads((repo / "ec2-install-policy.json").read_text()) == policy.document()
