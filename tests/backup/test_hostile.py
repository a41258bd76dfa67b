"""What someone who can read and write the repository (the bucket, the backup disk) but holds
neither the box nor the admin's keys tries, and what odbox-backup does about it (README,
"Threat model")."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from tests.backup.helpers import backup, backup_ok, backup_run, env_for, open_repo, verify_json
from tests.helpers import age_key, one_error_line


def test_a_recipients_file_of_only_comments_is_refused(postgres, tmp_path):
    env = env_for(postgres, None)
    recipients = tmp_path / "recipients"
    recipients.write_text("# add key\n\n")
    result = backup(env, "init", "--repo", str(tmp_path / "repo"), "-R", str(recipients))
    assert result.returncode == 2
    assert "holds no recipient" in one_error_line(result)
    assert not (tmp_path / "repo").exists()


def test_comments_in_a_recipients_file_are_never_stored_as_recipients(postgres, tmp_path):
    env = env_for(postgres, None)
    _, public = age_key(tmp_path)
    recipients = tmp_path / "recipients"
    recipients.write_text(f"# the admin's key\n  {public}  \n\n# the end\n")
    out = backup_ok(env, "init", "--repo", str(tmp_path / "repo"), "-R", str(recipients))
    assert "encrypted to 1 recipient)" in out
    config = json.loads((tmp_path / "repo" / "config.json").read_text())
    assert config["recipients"] == [public]


def _forge(repo: Path, snapshot_id: str, recipient: str, database: str) -> None:
    """What the attacker can make with config.json alone: an object and a manifest encrypted
    to its recipient (`zstd | age -r`), without the authentication key."""
    import pyrage
    import zstandard

    content = b"-- the attacker's dump\n"
    name = hashlib.sha256(content).hexdigest()
    r = pyrage.x25519.Recipient.from_str(recipient)
    path = repo / "objects" / name[:2] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pyrage.encrypt(zstandard.ZstdCompressor().compress(content), [r]))
    manifest = {
        "version": 1, "id": snapshot_id, "time": "2099-01-01T00:00:00+00:00", "host": "box",
        "mode": "hot", "source": "run", "odoo": {"version": None, "modules": {}},
        "database": {"name": database, "pg_version": "15.0", "wal": None,
                     "format": "pg_dump-custom", "size": len(content),
                     "sha256": hashlib.sha256(content).hexdigest(), "objects": [name]},
        "filestore": {"files": [], "count": 0, "bytes": 0},
        "totals": {"bytes": 0, "objects": 1, "new_objects": 1, "new_bytes": 0, "seconds": 0},
    }  # fmt: skip
    blob = zstandard.ZstdCompressor().compress(json.dumps(manifest).encode())
    (repo / "snapshots" / snapshot_id).write_bytes(pyrage.encrypt(blob, [r]))


@pytest.mark.timeout(600)
def test_a_forged_snapshot_is_refused_everywhere_and_never_delays_a_run(odoo, local_env, tmp_path):
    env = local_env
    name, _, filestore = odoo
    key, public = age_key(tmp_path)
    repo = tmp_path / "repo"
    backup_ok(env, "init", "--repo", str(repo), "--recipient", public)
    backup_run(env, str(repo), odoo)
    [real] = [p.name for p in (repo / "snapshots").iterdir()]
    future, present = "20990101T000000Z-0badf00d", f"{real[:16]}-0badf00d"
    _forge(repo, future, public, name)
    _forge(repo, present, public, name)
    identity = ["--identity", str(key)]

    code, report = verify_json(env, str(repo), *identity, "--read-data")
    problems = " ".join(report["problems"])
    assert code == 3 and f"snapshot {present}" in problems and "not authenticated" in problems
    assert f"snapshot {future}" in problems and "in the future" in problems
    assert [s["id"] for s in report["snapshots"] if s["ok"]] == [real]

    shown = backup(env, "show", "--repo", str(repo), "latest", "--json", *identity)
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == real
    assert "passed over" in shown.stderr  # the forged ones are said, not picked
    for forged in (future, present):
        result = backup(env, "restore", "--repo", str(repo), forged, "--db", f"{name}_x",
                        "--filestore", str(tmp_path / "x"), *identity)  # fmt: skip
        assert result.returncode == 1
        assert re.search("not authenticated|in the future", one_error_line(result))
    out = backup_ok(env, "prune", "--repo", str(repo), "--keep-last", "1", "--dry-run",
                    "--json", *identity)  # fmt: skip
    pruned = json.loads(out)
    assert [s["id"] for s in pruned["snapshots"] if s["keep"]] == [real]
    assert sorted(pruned["unauthenticated"]) == sorted([future, present])

    # The 2099 ID held every later run waiting for a later second; now the next run is
    # simply the newest real snapshot.
    backup(env, "run", "--repo", str(repo), "--db", name, "--filestore", str(filestore),
           timeout=300, check=True)  # fmt: skip
    ids = sorted(p.name for p in (repo / "snapshots").iterdir())
    newest = [i for i in ids if i not in (future, present)][-1]
    assert newest > real and newest < future


@pytest.mark.parametrize("change", ["swapped", "emptied"])
def test_a_changed_config_is_refused_and_nothing_is_written(odoo, local_env, tmp_path, change):
    env = local_env
    _, public = age_key(tmp_path)
    _, attacker = age_key(tmp_path, "attacker.txt")
    repo = tmp_path / "repo"
    backup_ok(env, "init", "--repo", str(repo), "--recipient", public)
    config = json.loads((repo / "config.json").read_text())
    config["recipients"] = [attacker] if change == "swapped" else []
    (repo / "config.json").write_text(json.dumps(config))
    result = backup(env, "run", "--repo", str(repo), "--db", odoo[0], "--filestore", str(odoo[2]))
    assert result.returncode == 1 and "was changed since `init`" in one_error_line(result)
    assert sorted(p.name for p in repo.iterdir()) == ["config.json"]  # nothing written

    # A config.json of an older, unauthenticated version in its place is refused too.
    for field in ("auth", "mac", "packing"):
        config.pop(field, None)
    packing = {"below": 1 << 20, "target": 8 << 20}
    (repo / "config.json").write_text(json.dumps({**config, "version": 2, "packing": packing}))
    result = backup(env, "run", "--repo", str(repo), "--db", odoo[0], "--filestore", str(odoo[2]))
    assert result.returncode == 1 and "not authenticated" in one_error_line(result)
    assert sorted(p.name for p in repo.iterdir()) == ["config.json"]


@pytest.mark.parametrize("size", [5000, 2 << 20], ids=["packed", "alone"])
def test_a_planted_index_or_object_cannot_stop_the_box_storing_a_file(odoo, local_env, tmp_path,
                                                                     size):  # fmt: skip
    env = local_env
    filestore = odoo[2]
    repo = tmp_path / "repo"
    backup_ok(env, "init", "--repo", str(repo))
    backup_run(env, str(repo), odoo)
    content = random.Random(size).randbytes(size)
    digest = hashlib.sha256(content).hexdigest()
    # The attacker guesses a file the box will store later and plants its name, pointing
    # at junk: in a pack's index (a small file), or as an object alone (a large one).
    pack_id = "cd" * 32
    (repo / "packs" / pack_id[:2]).mkdir(parents=True, exist_ok=True)
    (repo / "packs" / pack_id[:2] / pack_id).write_bytes(b"junk")
    (repo / "index" / pack_id).write_text(json.dumps({"pack": pack_id, "blobs": [[digest, 0, 4]]}))
    alone = repo / "objects" / digest[:2] / digest
    alone.parent.mkdir(parents=True, exist_ok=True)
    alone.write_bytes(b"junk")
    sha1 = hashlib.sha1(content).hexdigest()  # noqa: S324 (Odoo's file names)
    (filestore / sha1[:2]).mkdir(exist_ok=True)
    (filestore / sha1[:2] / sha1).write_bytes(content)

    backup_run(env, str(repo), odoo)
    assert open_repo(str(repo), None).get_object(digest) == content  # the real file, stored
    code, report = verify_json(env, str(repo), "--read-data")
    assert code == 3 and [s["ok"] for s in report["snapshots"]] == [True, True]
    assert any(f"index/{pack_id}" in p and "not authenticated" in p for p in report["problems"])


def test_copy_writes_the_real_manifest_over_one_planted_in_the_destination(odoo, local_env,
                                                                           tmp_path):  # fmt: skip
    env = local_env
    repo, offsite = str(tmp_path / "repo"), tmp_path / "offsite"
    backup_ok(env, "init", "--repo", repo)
    backup_ok(env, "init", "--repo", str(offsite))
    backup_run(env, repo, odoo)
    [snapshot_id] = open_repo(repo, None).snapshot_ids()
    planted = offsite / "snapshots" / snapshot_id
    planted.parent.mkdir()
    planted.write_bytes(b"the attacker's manifest under the ID the box will copy")
    out = backup_ok(env, "copy", "--repo", repo, "latest", "--to", str(offsite))
    assert f"copied snapshot {snapshot_id}" in out  # not "already there"
    code, report = verify_json(env, str(offsite), "--read-data")
    assert code == 0 and [s["id"] for s in report["snapshots"]] == [snapshot_id]
