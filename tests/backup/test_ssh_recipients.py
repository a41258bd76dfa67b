"""A repository encrypted to an ssh-ed25519 key and an age key opens with either one."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.backup.helpers import backup_ok, env_for, make_odoo
from tests.helpers import age_key
from tests.odoo_data import Shape, filestore_digest


def test_an_ssh_recipient_restores_as_well_as_an_age_one(postgres, tmp_path: Path) -> None:
    """An ssh-ed25519 key next to an age key: every object opens with either one."""
    ssh_key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_key)],
                   check=True)  # fmt: skip
    age_file, age_pub = age_key(tmp_path, "age.txt")
    filestore = tmp_path / "filestore"
    make_odoo(postgres, "odoo_ssh", filestore, Shape.small(), seed=4)
    env = env_for(postgres, None)
    repo = tmp_path / "repo"
    ssh_pub = ssh_key.with_suffix(".pub").read_text().strip()
    backup_ok(env, "init", "--repo", str(repo), "--recipient", ssh_pub, "--recipient", age_pub)
    backup_ok(env, "run", "--repo", str(repo), "--db", "odoo_ssh", "--filestore", str(filestore))
    some = next(p for p in (repo / "objects").rglob("*") if p.is_file())
    opened = subprocess.run(["age", "-d", "-i", str(ssh_key), str(some)], capture_output=True)
    assert opened.returncode == 0, opened.stderr  # the real age reads what was written
    restored = tmp_path / "restored"
    for key, name in ((ssh_key, "odoo_ssh_a"), (age_file, "odoo_ssh_b")):
        backup_ok(env, "restore", "--repo", str(repo), "latest", "--db", name,
                  "--filestore", str(restored / name), "--identity", str(key))  # fmt: skip
        assert filestore_digest(restored / name) == filestore_digest(filestore)
