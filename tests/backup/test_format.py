"""A repository read with nothing but FORMAT.md in mind: JSON, and the real `age` and `zstd`."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess

from tests.backup.helpers import AUTH_KEY_FILE, backup_ok, env_for, make_odoo
from tests.odoo_data import Shape


def _open(path, key, data: bytes | None = None) -> bytes:
    """`age -d -i KEY FILE | zstd -d`, as FORMAT.md says (of `data` when given)."""
    plain = subprocess.run(["age", "-d", "-i", str(key), *([] if data else [str(path)])],
                           input=data, capture_output=True, check=True).stdout  # fmt: skip
    return subprocess.run(["zstd", "-d", "-c"], input=plain, capture_output=True, check=True).stdout


def _authenticated(data: bytes, repo_key: bytes, kind: str, name: str) -> bytes:
    """The body behind a MAC line, the MAC checked as FORMAT.md's "Authentication" says."""
    line, _, body = data.partition(b"\n")
    assert line.startswith(b"odbox-auth-v1 ")
    expected = hmac.new(repo_key, f"{kind}\0{name}\0".encode() + body, hashlib.sha256)
    assert line.removeprefix(b"odbox-auth-v1 ").decode() == expected.hexdigest()
    return body


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
    assert config["format"] == "odbox-backup" and config["version"] == 3
    [secret] = re.findall(r"^odbox-backup-auth-key-1:([0-9a-f]{64})$", AUTH_KEY_FILE.read_text(),
                          flags=re.M)  # fmt: skip
    repo_key = hmac.new(bytes.fromhex(secret), f"odbox-backup repository {config['id']}".encode(),
                        hashlib.sha256).digest()  # fmt: skip
    rest = json.dumps({k: v for k, v in config.items() if k != "mac"}, sort_keys=True,
                      separators=(",", ":")).encode()  # fmt: skip
    assert config["mac"] == hmac.new(repo_key, b"config\0\0" + rest, hashlib.sha256).hexdigest()
    assert config["auth"] == {"algorithm": "hmac-sha256", "key_check": hmac.new(
        repo_key, b"key-check\0\0", hashlib.sha256).hexdigest()}  # fmt: skip
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
    indexes = {p.name: json.loads(_authenticated(p.read_bytes(), repo_key, "index", p.name))
               for p in (repo / "index").iterdir()}  # fmt: skip
    alone_indexed = {
        name: size for doc in indexes.values() for name, size in doc.get("objects", [])
    }
    assert alone_indexed == {p.name: p.stat().st_size for p in objects}  # every one, its size
    assert packs and {i for i, doc in indexes.items() if "pack" in doc} == {p.name for p in packs}
    for path in packs:
        assert path.parent.name == path.name[:2] and re.fullmatch(r"[0-9a-f]{64}", path.name)
        index = indexes[path.name]
        assert index["pack"] == path.name and index["size"] == path.stat().st_size
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
    body = _authenticated(snapshot.read_bytes(), repo_key, "snapshot", snapshot.name)
    manifest = json.loads(_open(snapshot, key, body))
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
    names = manifest["filestore"]["names"]  # "Attachment names": one row a line, sorted
    text = stored[names["object"]].decode()
    rows = json.loads(text)
    assert text.startswith("[\n") and text.endswith("\n]") and len(rows) == names["rows"] > 0
    assert text.count("\n") == len(rows) + 1 and rows == sorted(rows, key=lambda r: r[:2])
    assert {r[0] for r in rows} <= {e["path"] for e in manifest["filestore"]["files"]}
    named.add(names["object"])
    assert named == set(stored)  # nothing stored that the snapshot does not name
    assert any(len(f["objects"]) > 1 for f in manifest["filestore"]["files"])  # large files cut
    assert list((repo / "locks").iterdir()) == []
