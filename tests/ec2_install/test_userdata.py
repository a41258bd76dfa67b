"""The first-boot script: linted, and run for real against a file-backed disk on a loop device."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ec2_install import userdata


def _script(backup_gb: int = 10) -> str:
    return userdata.render(box="shop", backup_gb=backup_gb, backup_device="/dev/sdf")


def test_the_script_passes_bash_n_and_shellcheck(tmp_path: Path):
    script = tmp_path / "user-data"
    script.write_text(_script())
    subprocess.run(["bash", "-n", script], check=True)
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is in .ci/debian-packages.txt"
    result = subprocess.run([shellcheck, "--shell=bash", "--severity=style", script],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout


def test_the_user_data_names_no_flake_and_never_switches():
    script = _script()
    assert "BOX=shop\nBACKUP_GB=10\nBACKUP_DEVICE=/dev/sdf\n" in script
    for word in ("FLAKE", "NODE", "nixos-rebuild", "switch-to-configuration", "-boot"):
        assert word not in script, word
    assert len(script.encode()) < userdata.MAX_BYTES


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A 64 MiB file-backed disk on a loop device with partition scanning (root only)."""
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        pytest.skip("loop devices need root and /dev/loop-control")
    for tool in ("sfdisk", "mkfs.ext4", "losetup", "blkid", "lsblk"):
        assert shutil.which(tool), f"{tool} is in .ci/debian-packages.txt"
    image = tmp_path / "backup.img"
    with image.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    try:
        command = ["losetup", "--find", "--show", "--partscan", str(image)]
        device = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError as e:
        pytest.skip(f"no loop device here: {e.stderr.strip()}")
    try:
        yield image, device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


class FirstBoot:
    """Runs the rendered script as amazon-init would; a stand-in nixos-rebuild on its PATH
    records any call (there must be none)."""

    def __init__(self, tmp_path: Path, disk: str):
        self.tmp = tmp_path
        self.disk = disk
        self.calls = tmp_path / "nixos-rebuild.calls"
        stub = tmp_path / "bin"
        stub.mkdir(exist_ok=True)
        (stub / "nixos-rebuild").write_text(
            f'#!/bin/sh\necho "$NIX_CONFIG|$*" >> {self.calls}\nexit "${{REBUILD_EXIT:-0}}"\n'
        )
        (stub / "nixos-rebuild").chmod(0o755)
        self.script = tmp_path / "user-data"
        self.script.write_text(_script(backup_gb=1))

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", self.script], capture_output=True, text=True, timeout=120,
            env={**os.environ, "PATH": f"{self.tmp / 'bin'}:{os.environ['PATH']}",
                 "ODBOX_BACKUP_DISK": self.disk, "ODBOX_EC2_STATE_DIR": str(self.tmp / "state"),
                 **env},
        )  # fmt: skip

    def rebuilds(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


def _probe(device: str) -> dict[str, str]:
    out = subprocess.run(["blkid", "-p", "-o", "export", device], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_a_blank_disk_is_formatted_once_and_no_boot_switches(loop_disk, tmp_path: Path):
    _, device = loop_disk
    boot = FirstBoot(tmp_path, device)
    first = boot.run()
    assert first.returncode == 0, first.stderr
    part = _probe(f"{device}p1")
    assert part["PART_ENTRY_NAME"] == "backup" and part["PART_ENTRY_SCHEME"] == "gpt"
    assert (part["TYPE"], part["LABEL"]) == ("ext4", "backup")
    assert boot.rebuilds() == []

    # data written on the backup file system survives every later boot
    mount = tmp_path / "mnt"
    mount.mkdir()
    subprocess.run(["mount", f"{device}p1", mount], check=True)
    (mount / "snapshot").write_text("precious")
    subprocess.run(["umount", mount], check=True)
    for _ in range(2):
        again = boot.run()
        assert again.returncode == 0, again.stderr
        assert again.stderr.strip().endswith("; nothing to do") and "formatting" not in again.stderr
    assert _probe(f"{device}p1")["UUID"] == part["UUID"]
    assert boot.rebuilds() == []  # a reboot never switches configurations
    subprocess.run(["mount", "-o", "ro", f"{device}p1", mount], check=True)
    try:
        assert (mount / "snapshot").read_text() == "precious"
    finally:
        subprocess.run(["umount", mount], check=True)


def test_a_disk_holding_something_else_is_never_touched(loop_disk, tmp_path: Path):
    image, device = loop_disk
    subprocess.run(["mkfs.ext4", "-q", "-L", "someone", device], check=True)
    before = image.read_bytes()
    boot = FirstBoot(tmp_path, device)
    result = boot.run()
    assert result.returncode == 1
    assert "is not blank and has no partition named backup; left untouched" in result.stderr
    assert image.read_bytes() == before
    assert not (tmp_path / "state" / "ec2-install-disk.done").exists()  # the next boot looks again


def test_a_stray_byte_in_the_first_mib_is_not_blank(loop_disk, tmp_path: Path):
    image, device = loop_disk
    with open(device, "r+b") as disk:
        disk.seek(300_000)
        disk.write(b"\x01")
    before = image.read_bytes()
    result = FirstBoot(tmp_path, device).run()
    assert result.returncode == 1 and "left untouched" in result.stderr
    assert image.read_bytes() == before


def test_the_disk_is_found_by_size_when_no_device_name_exists(loop_disk, tmp_path: Path):
    """On Nitro the volume is an NVMe disk; the script finds the one disk of BACKUP_GB GiB."""
    _, device = loop_disk
    size = int(subprocess.run(["blockdev", "--getsize64", device], capture_output=True, text=True,
                              check=True).stdout)  # fmt: skip
    assert size == 64 * 1024 * 1024
    # the finder alone, told that the disk is 64 MiB and that a loop device is a disk
    script = _script().replace("want=$((BACKUP_GB * 1024 * 1024 * 1024))", f"want={size}")
    assert "$type == disk" in script
    script = script.replace("$type == disk", "$type == loop")
    script = script.replace("prepare_backup_disk\nmkdir", "find_backup_disk\nexit 0\nmkdir")
    assert "fi\nfind_backup_disk\nexit 0\n" in script and "want=67108864" in script
    (tmp_path / "find").write_text(script)
    listed = subprocess.run(["lsblk", "-dbnpo", "NAME,SIZE,TYPE"], capture_output=True, text=True,
                            check=True).stdout.split("\n")  # fmt: skip
    if sum(1 for line in listed if line.split()[1:] == [str(size), "loop"]) != 1:
        pytest.skip("another 64 MiB loop device is attached here")
    result = subprocess.run(["bash", tmp_path / "find"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == device
    # two candidates: the script refuses to guess
    image2 = tmp_path / "second.img"
    with image2.open("wb") as f:
        f.truncate(size)
    second = subprocess.run(["losetup", "--find", "--show", image2], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    try:
        result = subprocess.run(["bash", tmp_path / "find"], capture_output=True, text=True)
        assert result.returncode == 1 and "found 2 disks of 10 GiB" in result.stderr
    finally:
        subprocess.run(["losetup", "--detach", second], check=False)
