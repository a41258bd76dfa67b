"""Every ```sh example of tools/ec2-install/README.md runs, in order, against moto server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ec2_install import policy
from tests.ec2_install.conftest import Aws
from tests.helpers import run_sh_examples

README = Path(__file__).resolve().parents[2] / "tools/ec2-install/README.md"


def test_every_example_in_the_readme_runs(aws: Aws) -> None:
    ssh = aws.home / ".ssh"
    ssh.mkdir(mode=0o700)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", ssh / "id_ed25519"], check=True
    )
    env = {**aws.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    amis, plan, up, status, down = run_sh_examples(README, aws.home, env, at_least=5)
    assert "nixos/25.05.813814.9e7a3a27bbf3-aarch64-linux" in amis and "x86_64-linux" not in amis
    assert "nothing was changed" in plan and "launch m6g.xlarge (arm64)" in plan
    assert "box shop is up" in up and "ssh root@" in up
    assert "box shop in eu-west-1: running" in status
    assert json.loads((aws.home / "shop.json").read_text())["state"] == "running"
    assert "box shop is down" in down and "kept the backup volume" in down
    assert json.loads((aws.home / "ec2-install-policy.json").read_text()) == policy.document()
