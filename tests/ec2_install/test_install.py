"""The install over SSH: a real sshd on 127.0.0.1 stands in for the box (conftest's box_ssh),
moto's console answers the host key fingerprints, nixos-rebuild and switch-to-configuration
are stand-ins that record what they were asked (standins/README.md)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from ec2_install import install
from tests.ec2_install.conftest import Aws, BoxSsh, up_args


def _up(ssh_pub: Path, checkout: Path) -> list[str]:
    args = up_args(ssh_pub, install=True)
    args[args.index("--flake") + 1] = str(checkout)
    return args


def _ip(aws: Aws) -> str:
    return str(aws.client().describe_addresses()["Addresses"][0]["PublicIp"])


def _consoles(aws: Aws) -> int:
    return aws.proxy.actions.count("GetConsoleOutput")


def test_up_pins_the_host_key_copies_the_key_switches_and_waits_for_health(
    aws: Aws, ssh_pub: Path, box_ssh: BoxSsh, checkout: Path
):
    aws.proxy.console = box_ssh.fingerprints()
    result = aws.run(*_up(ssh_pub, checkout), env=box_ssh.env(aws))
    assert result.returncode == 0, result.stderr
    assert "box shop answers: /odbox/health passes through Nginx" in result.stdout

    key = box_ssh.root / "var/lib/odbox/age.key"
    assert key.read_bytes() == (checkout / "vault/age.key").read_bytes()
    stat = key.stat()
    assert (stat.st_mode & 0o777, stat.st_uid, stat.st_gid) == (0o400, 0, 0)
    # the key was there before the switch, which ran once, from the laptop
    assert box_ssh.switches() == ["switch key=present"]
    assert box_ssh.rebuilds() == [
        f"switch --flake {checkout}#ec2-aarch64 --target-host root@{_ip(aws)}"
    ]
    sshopts = (box_ssh.dir / "log" / "nix-sshopts").read_text()
    assert "StrictHostKeyChecking=yes" in sshopts and "HostKeyAlias=ec2-install-i-" in sshopts
    assert box_ssh.health_requests[-1] == "/odbox/health"
    # the pinned key is the box's, and nothing else
    [instance_dir] = (box_ssh.dir / "state/ec2-install/eu-west-1/shop").iterdir()
    pinned = (instance_dir / "known_hosts").read_text().split()
    assert pinned[1:3] == (box_ssh.host_key.with_suffix(".pub")).read_text().split()[:2]
    assert json.loads((instance_dir / "state.json").read_text())["health"] is True

    # a re-run finds every step done: no console read, no copy, no switch
    aws.proxy.actions.clear()
    again = aws.run(*_up(ssh_pub, checkout), env=box_ssh.env(aws))
    assert again.returncode == 0, again.stderr
    assert _consoles(aws) == 0 and box_ssh.switches() == ["switch key=present"]
    assert aws.proxy.mutating() == []


def test_a_host_key_other_than_the_consoles_is_refused(
    aws: Aws, ssh_pub: Path, box_ssh: BoxSsh, checkout: Path, tmp_path: Path
):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    aws.proxy.console = box_ssh.fingerprints(other)
    result = aws.run(*_up(ssh_pub, checkout), env=box_ssh.env(aws))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "install step pin failed" in line and "refusing to connect" in line
    assert not (box_ssh.root / "var/lib/odbox").exists()
    assert box_ssh.switches() == [] and box_ssh.rebuilds() == []
    # the AWS side is left for the re-run (it is not what failed)
    status = json.loads(aws.run("status", "--name", "shop", "--json").stdout)
    assert status["state"] == "running"


def test_the_console_fingerprints_are_read_from_the_last_block():
    old = "-----BEGIN SSH HOST KEY FINGERPRINTS-----\n256 SHA256:old root@a (ED25519)\n"
    new = (
        "-----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n"
        "3072 SHA256:AbC+/1 root@shop (RSA)\r\n256 SHA256:dEf2 root@shop (ED25519)\r\n"
        "-----END SSH HOST KEY FINGERPRINTS-----\r\n"
    )
    assert install.console_fingerprints(
        old + "-----END SSH HOST KEY FINGERPRINTS-----\n" + new
    ) == {
        "SHA256:AbC+/1",
        "SHA256:dEf2",
    }
    assert install.console_fingerprints(new.split("-----END")[0]) == set()  # not complete yet
    assert install.console_fingerprints("Linux version 6.6 …") == set()


def test_a_run_killed_while_waiting_for_the_console_resumes_there(
    aws: Aws, ssh_pub: Path, box_ssh: BoxSsh, checkout: Path
):
    aws.proxy.console = box_ssh.fingerprints()
    env = box_ssh.env(aws)
    code, _, _ = aws.signalled_at("GetConsoleOutput", signal.SIGKILL, *_up(ssh_pub, checkout),
                                  env=env)  # fmt: skip
    assert code == -signal.SIGKILL
    assert box_ssh.switches() == []
    again = aws.run(*_up(ssh_pub, checkout), env=env)
    assert again.returncode == 0, again.stderr
    assert box_ssh.switches() == ["switch key=present"]


def test_a_run_killed_during_the_switch_resumes_with_the_switch(
    aws: Aws, ssh_pub: Path, box_ssh: BoxSsh, checkout: Path
):
    aws.proxy.console = box_ssh.fingerprints()
    env = box_ssh.env(aws)
    (box_ssh.dir / "log" / "kill-at-switch").touch()  # the stand-in kills ec2-install
    killed = aws.run(*_up(ssh_pub, checkout), env=env)
    assert killed.returncode == -signal.SIGKILL
    key = box_ssh.root / "var/lib/odbox/age.key"
    copied = key.stat().st_ino
    assert box_ssh.switches() == []
    aws.proxy.actions.clear()
    again = aws.run(*_up(ssh_pub, checkout), env=env)
    assert again.returncode == 0, again.stderr
    assert _consoles(aws) == 0  # the pinned key holds
    assert key.stat().st_ino == copied  # the key was not copied again
    assert len(box_ssh.rebuilds()) == 2 and box_ssh.switches() == ["switch key=present"]


def test_a_run_killed_while_waiting_for_health_resumes_with_health(
    aws: Aws, ssh_pub: Path, box_ssh: BoxSsh, checkout: Path
):
    aws.proxy.console = box_ssh.fingerprints()
    env = box_ssh.env(aws)
    code, _, _ = aws.signalled_at("health", signal.SIGKILL, *_up(ssh_pub, checkout), env=env,
                                  hooks=box_ssh.hooks)  # fmt: skip
    assert code == -signal.SIGKILL
    assert box_ssh.switches() == ["switch key=present"]
    again = aws.run(*_up(ssh_pub, checkout), env=env)
    assert again.returncode == 0, again.stderr
    assert box_ssh.switches() == ["switch key=present"]  # not switched again
    assert "answers: /odbox/health passes" in again.stdout


def test_a_failed_switch_says_which_step_and_the_re_run_resumes_there(
    aws: Aws, ssh_pub: Path, box_ssh: BoxSsh, checkout: Path
):
    aws.proxy.console = box_ssh.fingerprints()
    env = box_ssh.env(aws)
    (box_ssh.root / "fail-switch").touch()
    failed = aws.run(*_up(ssh_pub, checkout), env=env)
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert "install step switch failed: nixos-rebuild switch --flake" in last
    assert "run `ec2-install up` again to resume there" in last
    (box_ssh.root / "fail-switch").unlink()
    aws.proxy.actions.clear()
    again = aws.run(*_up(ssh_pub, checkout), env=env)
    assert again.returncode == 0, again.stderr
    assert _consoles(aws) == 0
    assert box_ssh.switches() == ["switch key=present"] * 2


def test_a_failed_key_copy_says_so_and_nothing_is_switched(
    aws: Aws, ssh_pub: Path, box_ssh: BoxSsh, checkout: Path
):
    aws.proxy.console = box_ssh.fingerprints()
    env = box_ssh.env(aws)
    (box_ssh.root / "var/lib").mkdir(parents=True)
    (box_ssh.root / "var/lib/odbox").write_text("a file where the directory goes")
    failed = aws.run(*_up(ssh_pub, checkout), env=env)
    assert failed.returncode == 1
    assert "install step key failed" in failed.stderr
    assert box_ssh.rebuilds() == [] and box_ssh.switches() == []
    (box_ssh.root / "var/lib/odbox").unlink()
    again = aws.run(*_up(ssh_pub, checkout), env=env)
    assert again.returncode == 0, again.stderr
    assert box_ssh.switches() == ["switch key=present"]
