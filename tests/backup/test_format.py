"""A repository read with nothing but FORMAT.md in mind: JSON, and the real `age` and `zstd`."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess

from tests.backup.helpers import backup_ok, env_for, make_odoo
from tests.odoo_data import Shape


def _open(path, key) -> bytes:
    """`age -d -i KEY FILE | zstd -d`, as FORMAT.md says."""
    plain = subprocess.run(["age", "-d", "-i", str(key), str(path)], capture_output=True,
                           check=True).stdout  # fmt: skip
    return subprocess.run(["zstd", "-d", "-c"], input=plain, capture_output=True, check=True).stdout


def test_the_repository_is_what_format_md_says(postgres, tmp_path):
    filestore = tmp_path / "filestore"
    make_odoo(postgres, "odoo_format", filestore, Shape.with_large_files(), seed=2)
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
    repo = tmp_path / "repo"
    env = env_for(postgres, None)
    backup_ok(env, "init", "--repo", str(repo), "--recipient", recipient)
    backup_ok(env, "run", "--repo", str(repo), "--db", "odoo_format", "--filestore", str(filestore))

    config = json.loads((repo / "config.json").read_text())
    assert config["format"] == "odbox-backup" and config["version"] == 2
    assert config["packing"] == {"below": 1 << 20, "target": 8 << 20}
    assert re.fullmatch(r"[0-9a-f]{32}", config["id"]) and config["recipients"] == [recipient]
    assert config["compression"] == "zstd" and config["chunking"]["algorithm"] == "fastcdc2020"

    objects = sorted(p for p in (repo / "objects").rglob("*") if p.is_file())
    alone = {p.name for p in objects}
    stored = {}
    for path in objects:
        assert path.parent.name == path.name[:2] and re.fullmatch(r"[0-9a-f]{64}", path.name)
        stored[path.name] = _open(path, key)
        assert hashlib.sha256(stored[path.name]).hexdigest() == path.name

    # Packs: `age -d | zstd -d` gives their objects concatenated; the plain index says where
    # each object's zstd frame is in the decrypted pack.
    packs = sorted(p for p in (repo / "packs").rglob("*") if p.is_file())
    assert packs and {p.name for p in (repo / "index").iterdir()} == {p.name for p in packs}
    for path in packs:
        assert path.parent.name == path.name[:2] and re.fullmatch(r"[0-9a-f]{64}", path.name)
        index = json.loads((repo / "index" / path.name).read_text())
        assert index["pack"] == path.name
        frames = subprocess.run(["age", "-d", "-i", str(key), str(path)], capture_output=True,
                                check=True).stdout  # fmt: skip
        contents = []
        for name, offset, length in index["blobs"]:
            frame = frames[offset : offset + length]
            content = subprocess.run(["zstd", "-d", "-c"], input=frame, capture_output=True,
                                     check=True).stdout  # fmt: skip
            assert hashlib.sha256(content).hexdigest() == name and len(content) < 1 << 20
            stored[name] = content
            contents.append(content)
        assert sum(length for _, _, length in index["blobs"]) == len(frames)
        assert _open(path, key) == b"".join(contents)

    [snapshot] = list((repo / "snapshots").iterdir())
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", snapshot.name)
    manifest = json.loads(_open(snapshot, key))
    assert manifest["id"] == snapshot.name and manifest["version"] == 1
    assert set(manifest) >= {"time", "host", "mode", "source", "database", "odoo", "filestore",
                             "totals"}  # fmt: skip
    named = set(manifest["database"]["objects"])
    named_by_dump = set(named)
    for entry in manifest["filestore"]["files"]:
        content = b"".join(stored[n] for n in entry["objects"])
        assert content == (filestore / entry["path"]).read_bytes()
        assert len(content) == entry["size"]
        named |= set(entry["objects"])
        if entry["size"] < 1 << 20:  # a small file is packed (alone only if a dump has it too)
            assert entry["objects"][0] not in alone or entry["objects"][0] in named_by_dump
    assert named == set(stored)  # nothing stored that the snapshot does not name
    assert any(len(f["objects"]) > 1 for f in manifest["filestore"]["files"])  # large files cut
    assert list((repo / "locks").iterdir()) == []
