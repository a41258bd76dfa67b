"""Packs (FORMAT.md, "Packs"): small files share one file, prune rewrites packs it half
empties, a killed prune loses nothing, a damaged index is reported and stops prune, and a
version 1 repository (no packs) is still read and written as version 1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg
import zstandard

from tests.backup.conftest import moto_for
from tests.backup.helpers import (
    ODBOX_BACKUP,
    authenticated_body,
    backup,
    backup_ok,
    backup_run,
    dry_prune,
    open_repo,
    pack_indexes,
    show,
    store_for,
    verify_json,
)
from tests.backup.killpoints import with_killpoints
from tests.helpers import one_error_line


def _drop_half_the_small_files(dsn, filestore) -> list[str]:
    """Delete every other attachment under 1 MiB, row and file, as Odoo's garbage collector
    would; the files deleted."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id, store_fname FROM ir_attachment WHERE file_size BETWEEN 1 AND 1048575"
            " ORDER BY id"
        ).fetchall()
        gone = rows[::2]
        conn.execute("DELETE FROM ir_attachment WHERE id = ANY(%s)", [[r[0] for r in gone]])
        conn.commit()
    for _, fname in gone:
        (filestore / fname).unlink()
    return [str(fname) for _, fname in gone]


def _keys(store, prefix):
    return {key.rsplit("/", 1)[1] for key in store.list(prefix)}


def _pack_index_keys(store):
    return {key.rsplit("/", 1)[1] for key in pack_indexes(store)}


def test_small_files_share_packs_and_prune_rewrites_half_empty_ones(odoo, backend, env, request):
    _, dsn, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    store = store_for(backend, moto_for(backend, request))
    first_packs = _keys(store, "packs")
    small = [f for f in show(env, backend, "latest")["filestore"]["files"]
             if 0 < f["size"] < 1 << 20]  # fmt: skip
    assert len(first_packs) == 1 and len(small) > 5  # every small file in the one pack
    assert not any(store.exists(f"objects/{f['objects'][0][:2]}/{f['objects'][0]}")
                   for f in small)  # fmt: skip

    gone = _drop_half_the_small_files(dsn, filestore)
    backup_run(env, backend, odoo)
    dry, ids, before = dry_prune(env, backend, moto_for(backend, request))
    assert dry["packs_rewritten"] == 1 and dry["objects_deleted"] >= len(gone)
    assert (
        _keys(store, "packs") == first_packs
        and open_repo(backend, moto_for(backend, request)).known_objects() == before
    )

    out = backup_ok(env, "prune", "--repo", backend, "--keep-last", "1")
    assert "rewrote 1 pack" in out
    repo = open_repo(backend, moto_for(backend, request))
    assert repo.snapshot_ids() == ids[1:]
    kept = set(repo.objects_of(repo.read_snapshot(ids[1])))
    assert repo.known_objects() == kept  # the deleted files' objects went with the old pack
    packs = _keys(store, "packs")
    assert packs and not packs & first_packs and _pack_index_keys(store) == packs
    code, report = verify_json(env, backend, "--read-data")
    assert code == 0 and report["objects"]["unreferenced"] == 0, report["problems"]


def _prune_killed_after_changes(env, repo: Path, changes: int) -> bool:
    """Run `prune --keep-last 1` and SIGKILL it (its process group) right after its
    `changes`th write or delete of a key that is not a lock (tests/backup/killpoints);
    False if it finished before that."""
    kill_env = with_killpoints(env, kill_at=f"change:repository:{changes}:after")
    child = subprocess.run([str(ODBOX_BACKUP), "prune", "--repo", str(repo), "--keep-last", "1"],
                           env=kill_env, capture_output=True, text=True,
                           start_new_session=True)  # fmt: skip
    if child.returncode == -signal.SIGKILL:
        return True
    assert child.returncode == 0, child.stderr
    return False


def test_a_killed_prune_loses_nothing(odoo, local_env, tmp_path):
    """Kill a prune right after its 1st change to the repository, the next one right after
    its 2nd, and so on, each on what the last killed one left, until one finishes; every
    kill leaves a whole repository. The kills are at counted calls of the store, not after a
    time (tests/backup/killpoints)."""
    env = local_env
    repo = tmp_path / "repo"
    backup_ok(env, "init", "--repo", str(repo))
    backup_run(env, str(repo), odoo)
    _, dsn, filestore = odoo
    _drop_half_the_small_files(dsn, filestore)
    backup_run(env, str(repo), odoo)
    kept = show(env, str(repo), "latest")
    kills = 0
    while _prune_killed_after_changes(env, repo, kills + 1):
        kills += 1
        code, report = verify_json(env, str(repo), "--read-data")
        assert code == 0, report["problems"]  # every snapshot listed is whole
    assert kills >= 2  # killed after its first change, and after its second
    store = store_for(str(repo), None)
    assert _pack_index_keys(store) == _keys(store, "packs")  # the leftovers are gone
    assert [s["id"] for s in json.loads(backup_ok(env, "list", "--repo", str(repo), "--json"))] == [
        kept["id"]
    ]
    code, report = verify_json(env, str(repo), "--read-data")
    assert code == 0 and report["objects"]["unreferenced"] == 0 and report["orphan_packs"] == 0


def test_a_damaged_index_is_reported_and_stops_prune(odoo, backend, env, request):
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    backup_run(env, backend, odoo)
    store = store_for(backend, moto_for(backend, request))
    [index] = list(pack_indexes(store))
    store.put(index, b'{"pack": "not this one"')

    code, report = verify_json(env, backend)
    assert code == 3 and any(index in p and "damaged" in p for p in report["problems"])
    result = backup(env, "prune", "--repo", backend, "--keep-last", "1")
    assert result.returncode == 1 and "nothing was deleted" in one_error_line(result)
    assert len(open_repo(backend, moto_for(backend, request)).snapshot_ids()) == 2
    # A run does not trust what it cannot read: the small files go into a new pack.
    backup_run(env, backend, odoo)
    assert len(list(store.list("packs"))) == 2
    result = backup(env, "verify", "--repo", backend, "latest", "--read-data")
    assert result.returncode == 3 and "damaged" in result.stdout + result.stderr


def test_a_pack_without_index_is_a_leftover_prune_deletes(odoo, local_env, tmp_path):
    env = local_env
    repo = tmp_path / "repo"
    backup_ok(env, "init", "--repo", str(repo))
    backup_run(env, str(repo), odoo)
    orphan = repo / "packs" / "cd" / ("cd" * 32)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(os.urandom(1000))
    code, report = verify_json(env, str(repo))
    assert code == 0 and report["orphan_packs"] == 1
    assert "1 pack a killed run left" in backup_ok(env, "verify", "--repo", str(repo))
    backup_ok(env, "prune", "--repo", str(repo), "--keep-last", "1")
    assert not orphan.exists()


def _as_version_1(repo: Path) -> None:
    """Turn a fresh unencrypted repository into what odbox-backup wrote before packs and
    authentication: every object alone, manifests without a MAC line, config version 1."""
    opened = open_repo(str(repo), None)
    compressor = zstandard.ZstdCompressor()
    for name in opened.known_objects(with_places=True):
        if opened.location(name) is not None:
            path = repo / "objects" / name[:2] / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(compressor.compress(opened.get_object(name)))
    shutil.rmtree(repo / "packs")
    shutil.rmtree(repo / "index")
    for snapshot in (repo / "snapshots").iterdir():
        snapshot.write_bytes(authenticated_body(snapshot.read_bytes()))
    config = json.loads((repo / "config.json").read_text())
    for field in ("packing", "auth", "mac"):
        del config[field]
    (repo / "config.json").write_text(json.dumps({**config, "version": 1}))


def test_a_version_1_repository_is_read_but_never_written(odoo, local_env, tmp_path):
    env = local_env
    repo = tmp_path / "repo"
    backup_ok(env, "init", "--repo", str(repo))
    backup_run(env, str(repo), odoo)
    _as_version_1(repo)
    keyless = {k: v for k, v in env.items() if k != "ODBOX_BACKUP_AUTH_KEY_FILE"}
    code, report = verify_json(keyless, str(repo), "--read-data")
    assert code == 0 and report["objects"]["read"] == report["objects"]["referenced"]
    result = backup(keyless, "verify", "--repo", str(repo))
    assert "not authenticated" in result.stderr  # said every time it is read
    run = ["run", "--repo", str(repo), "--db", odoo[0], "--filestore", str(odoo[2])]
    result = backup(keyless, *run)
    assert result.returncode == 1 and "error: " in result.stderr
    assert "no longer writes into it" in result.stderr and "Traceback" not in result.stderr
    # With the key (the box's configuration), an unauthenticated repository is refused: its
    # config.json could be an attacker's.
    result = backup(env, "list", "--repo", str(repo))
    assert result.returncode == 1 and "not authenticated" in one_error_line(result)
    assert len(list((repo / "snapshots").iterdir())) == 1
