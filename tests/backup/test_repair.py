"""`unlock` and `repair index`: a stuck lock or a lost index must not stop prunes forever."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import socket
import subprocess

import pytest
import zstandard
from pyrage import x25519

from odbox_backup.repair import zstd_frames
from tests.backup.conftest import moto_for
from tests.backup.helpers import backup, backup_ok, backup_run, pack_indexes, store_for, verify_json
from tests.helpers import one_error_line
from tests.odoo_data import store_file


def _lock(host: str, pid: int, time: dt.datetime) -> bytes:
    return json.dumps({"host": host, "pid": pid, "command": "odbox-backup run", "mode": "write",
                       "time": time.isoformat(), "repository": "x"}).encode()  # fmt: skip


def test_unlock_removes_stale_locks_and_remove_all_the_live_looking_ones_with_a_warning(
    backend, env, request, odoo
):
    backup_ok(env, "init", "--repo", backend)
    store = store_for(backend, moto_for(backend, request))
    now = dt.datetime.now(dt.UTC)
    store.put("locks/dead.json", _lock(socket.gethostname(), 2**22 + 17, now))  # no such pid
    store.put("locks/other.json", _lock("other-box", 1, now))  # another host's: looks live
    out = backup_ok(env, "unlock", "--repo", backend)
    assert f"removed the stale lock of `odbox-backup run` on {socket.gethostname()}" in out
    assert "kept the live lock of `odbox-backup run` on other-box" in out
    assert list(store.list("locks")) == ["locks/other.json"]
    run = ["run", "--repo", backend, "--db", odoo[0], "--filestore", str(odoo[2])]
    assert backup(env, *run).returncode == 4

    result = backup(env, "unlock", "--repo", backend, "--remove-all")
    assert result.returncode == 0
    warning = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warning) == 1 and "on other-box (pid 1)" in warning[0]
    assert "may still be running" in warning[0]
    assert list(store.list("locks")) == []
    backup_ok(env, *run)
    assert "holds no lock" in backup_ok(env, "unlock", "--repo", backend)


@pytest.fixture
def encrypted_with_two_snapshots(odoo, backend, env, tmp_path):
    """An encrypted repository with two snapshots, packs, and a file stored alone; the
    identity's path."""
    key = x25519.Identity.generate()
    identity = tmp_path / "key.txt"
    identity.write_text(f"{key}\n")
    store_file(odoo[2], random.Random(5).randbytes(3 << 20))  # stored alone (chunks)
    backup_ok(env, "init", "--repo", backend, "--recipient", str(key.to_public()))
    backup_run(env, backend, odoo)
    store_file(odoo[2], random.Random(6).randbytes(40_000))
    backup_run(env, backend, odoo)
    return identity


def _prune(env, backend, identity):
    return backup(env, "prune", "--repo", backend, "--identity", str(identity), "--keep-last", "1")


@pytest.mark.parametrize("damage", ["deleted", "corrupt", "forged"])
def test_a_lost_pack_index_blocks_prune_until_repair_index_rebuilds_it(
    encrypted_with_two_snapshots, backend, env, request, damage
):
    identity = encrypted_with_two_snapshots
    store = store_for(backend, moto_for(backend, request))
    indexes = pack_indexes(store)
    key, document = max(indexes.items(), key=lambda item: len(item[1]["blobs"]))
    original = store.get(key)
    if damage == "deleted":
        store.delete(key)
    elif damage == "corrupt":
        store.put(key, original[:200])
    else:  # a valid-looking index under a MAC made without the key
        store.put(key, b"odbox-auth-v1 " + b"0" * 64 + b"\n" + original.split(b"\n", 1)[1])
    code, report = verify_json(env, backend, "--identity", str(identity))
    assert code == 3

    result = _prune(env, backend, identity)
    assert result.returncode == 1
    assert "run `odbox-backup repair index`" in one_error_line(result)
    assert store.exists(f"packs/{document['pack'][:2]}/{document['pack']}")  # nothing deleted

    refused = backup(env, "repair", "index", "--repo", backend)
    assert refused.returncode == 2 and "pass --identity" in one_error_line(refused)
    repaired = backup(env, "repair", "index", "--repo", backend, "--identity", str(identity))
    out = repaired.stdout
    assert (
        "1 missing ones written" if damage == "deleted" else "1 damaged indexes rebuilt"
    ) in out, repaired.stderr
    rebuilt = pack_indexes(store)[key]
    assert rebuilt["blobs"] == document["blobs"] and rebuilt["size"] == document["size"]

    code, report = verify_json(env, backend, "--identity", str(identity), "--read-data")
    assert code == 0, report["problems"]
    result = _prune(env, backend, identity)
    assert result.returncode == 0, result.stderr
    code, report = verify_json(env, backend, "--identity", str(identity), "--read-data")
    assert code == 0 and len(report["snapshots"]) == 1


def test_repair_index_indexes_objects_stored_alone_whose_index_is_damaged(
    encrypted_with_two_snapshots, backend, env, request
):
    identity = encrypted_with_two_snapshots
    store = store_for(backend, moto_for(backend, request))
    alone = {}
    for key in store.list("index"):
        body = store.get(key).split(b"\n", 1)[1]
        if b'"objects"' in body:
            alone[key] = json.loads(body)["objects"]
    key, objects = next(iter(alone.items()))
    store.put(key, b"damaged")
    result = _prune(env, backend, identity)
    assert result.returncode == 1 and "repair index" in one_error_line(result)
    out = backup_ok(env, "repair", "index", "--repo", backend, "--identity", str(identity))
    assert "1 removed" in out and f"{len(objects)} objects stored alone indexed" in out
    assert not store.exists(key)
    code, report = verify_json(env, backend, "--identity", str(identity), "--read-data")
    assert code == 0, report["problems"]
    assert _prune(env, backend, identity).returncode == 0


@pytest.mark.parametrize("sizes", [[0, 1, 5000], [300_000, 40, 2_000_000]])
def test_zstd_frames_finds_every_frame_the_real_zstd_writes(tmp_path, sizes):
    """Frames of the real zstd (checksums, raw and RLE blocks) and of python-zstandard."""
    if shutil.which("zstd") is None:
        pytest.skip("the zstd program is not installed (.ci/debian-packages.txt names it)")
    rng = random.Random(9)
    contents = [rng.randbytes(n // 2) + bytes(n - n // 2) for n in sizes]
    frames = []
    for i, content in enumerate(contents):
        (tmp_path / f"{i}").write_bytes(content)
        if i % 2:
            frames.append(zstandard.ZstdCompressor(level=3).compress(content))
        else:
            done = subprocess.run(["zstd", "-q", "-c", "--check", str(tmp_path / f"{i}")],
                                  capture_output=True, check=True)  # fmt: skip
            frames.append(done.stdout)
    joined = b"".join(frames)
    found = list(zstd_frames(joined))
    assert [length for _, length in found] == [len(f) for f in frames]
    for (offset, length), content in zip(found, contents, strict=True):
        got = (
            zstandard.ZstdDecompressor()
            .decompressobj()
            .decompress(joined[offset : offset + length])
        )
        assert got == content
    with pytest.raises(ValueError, match="cut short"):
        list(zstd_frames(joined[:-3]))
