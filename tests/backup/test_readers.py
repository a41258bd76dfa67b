"""Readers: `verify` without the identity (the box's case), `--json` output that is only JSON,
and the readers' lock that a prune respects."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from tests.backup.helpers import backup, backup_ok, backup_run, verify_json
from tests.helpers import one_error_line


def _encrypted(env, tmp_path: Path, odoo) -> tuple[str, Path]:
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo, "--recipient", public)
    backup_run(env, repo, odoo)
    backup_run(env, repo, odoo)
    return repo, key


def test_verify_without_identity_checks_what_it_can_and_passes_a_healthy_repository(
    odoo, local_env, tmp_path
):
    env = local_env
    repo, _ = _encrypted(env, tmp_path, odoo)
    result = backup(env, "verify", "--repo", repo)
    assert result.returncode == 0, result.stderr
    assert "verify ok: 2 of 2 snapshots authenticated" in result.stdout
    code, report = verify_json(env, repo)
    assert code == 0 and report["keyless"] and report["problems"] == []

    # What it can tell without the identity: a pack cut short, a manifest replaced.
    pack = next(p for p in (Path(repo) / "packs").rglob("*") if p.is_file())
    pack.write_bytes(pack.read_bytes()[:-10])
    snapshot = sorted((Path(repo) / "snapshots").iterdir())[0]
    snapshot.write_bytes(snapshot.read_bytes().replace(b"odbox-auth-v1 ", b"odbox-auth-v1 0", 1))
    code, report = verify_json(env, repo)
    assert code == 3
    problems = " ".join(report["problems"])
    assert f"pack {pack.name[:12]}… is" in problems and "its index says" in problems
    assert f"snapshot {snapshot.name}" in problems and "not authenticated" in problems


def test_prune_json_is_only_json_on_stdout(odoo, local_env, tmp_path):
    env = local_env
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_run(env, repo, odoo)
    backup_run(env, repo, odoo)
    result = backup(env, "prune", "--repo", repo, "--keep-last", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["forgotten"]) == 1  # stdout is the document alone
    assert "forgot 1 snapshot" in result.stderr


def _lock(repo: str, mode: str, command: str) -> Path:
    """A lock held by a live process of this host (this test's), as `mode` writes it."""
    import datetime as dt

    path = Path(repo) / "locks" / f"{socket.gethostname()}-{os.getpid()}-0000abcd.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                "command": command, "mode": mode, "repository": "?",
                                "time": dt.datetime.now(dt.UTC).isoformat()}))  # fmt: skip
    return path


def test_verify_never_runs_beside_a_prune_and_a_prune_waits_for_readers(odoo, local_env, tmp_path):
    env = local_env
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_run(env, repo, odoo)
    pruning = _lock(repo, "prune", "odbox-backup prune")
    result = backup(env, "verify", "--repo", repo)
    assert result.returncode == 4 and "locked by `odbox-backup prune`" in one_error_line(result)
    pruning.unlink()

    reading = _lock(repo, "read", "odbox-backup verify")
    result = backup(env, "prune", "--repo", repo, "--keep-last", "1")
    assert result.returncode == 4 and "locked by `odbox-backup verify`" in one_error_line(result)
    backup_run(env, repo, odoo)  # a run only adds: it goes beside a reader
    assert backup(env, "verify", "--repo", repo).returncode == 0  # and so does another reader
    reading.unlink()
    backup_ok(env, "prune", "--repo", repo, "--keep-last", "1")


def test_repository_and_cache_files_are_for_their_owner_only(odoo, local_env, tmp_path):
    """An unencrypted repository holds the database in clear, the cache every file's path."""
    env = local_env
    repo = tmp_path / "repo"
    cache = tmp_path / "cache"
    backup_ok(env, "init", "--repo", str(repo))
    backup_run(env, str(repo), odoo, "--cache-dir", str(cache))
    for root in (repo, cache):
        modes = {p: p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}
        assert modes and all(mode == (0o700 if p.is_dir() else 0o600)
                             for p, mode in modes.items()), modes  # fmt: skip
