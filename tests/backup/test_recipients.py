"""Rotating who can read a repository (`recipients list|add|remove|rewrap`, issue 22 item 3):
every manifest, pack and object gets a new age header for the new set, its payload kept, so
old snapshots open with an added key and no longer with a removed one. Checked with the real
`age` binary, on a folder and on S3 (moto), and with the process killed at each change."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from pyrage import x25519

from odbox_backup.rewrap import parse_header
from tests.backup.conftest import moto_for
from tests.backup.helpers import (
    ODBOX_BACKUP,
    authenticated_body,
    backup,
    backup_ok,
    backup_run,
    show,
    store_for,
    verify_json,
)
from tests.backup.killpoints import with_killpoints
from tests.helpers import one_error_line


def _key(tmp_path: Path, name: str) -> tuple[Path, str]:
    identity = x25519.Identity.generate()
    path = tmp_path / f"{name}.txt"
    path.write_text(str(identity) + "\n")
    return path, str(identity.to_public())


def _ssh_key(tmp_path: Path, kind: str) -> tuple[Path, str]:
    path = tmp_path / f"id_{kind}"
    extra = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", "me@laptop",
                    "-f", str(path)], check=True)  # fmt: skip
    return path, path.with_suffix(".pub").read_text().strip()


def _age_opens(identity: Path, data: bytes) -> bool:
    """Whether the real `age -d -i identity` decrypts `data`."""
    done = subprocess.run(["age", "-d", "-i", str(identity)], input=data, capture_output=True)
    return done.returncode == 0


def _encrypted_files(store) -> dict[str, bytes]:
    """Every encrypted file of a repository, as age reads it (a manifest after its MAC line)."""
    files = {}
    for prefix in ("snapshots", "packs", "objects"):
        for key in store.list(prefix):
            data = store.get(key)
            files[key] = authenticated_body(data) if prefix == "snapshots" else data
    return files


def _payloads(files: dict[str, bytes]) -> set[bytes]:
    return {data[parse_header(data).end :] for data in files.values()}


def _repository_of_a_and_b(env, repo: str, odoo, tmp_path: Path):
    """A repository encrypted to keys A (stays) and B (goes), two snapshots in it; A, B and C
    (comes) as (identity file, public key)."""
    keys = [_key(tmp_path, name) for name in ("admin", "departing", "new-admin")]
    backup_ok(env, "init", "--repo", repo, "--recipient", keys[0][1], "--recipient", keys[1][1])
    backup_run(env, repo, odoo)
    backup_run(env, repo, odoo)
    return keys


def test_remove_and_add_rewraps_every_file_and_keeps_its_payload(odoo, backend, env, tmp_path,
                                                                  request):  # fmt: skip
    (a, a_pub), (b, b_pub), (c, c_pub) = _repository_of_a_and_b(env, backend, odoo, tmp_path)
    store = store_for(backend, moto_for(backend, request))
    before = _encrypted_files(store)
    assert any(k.startswith("objects/") for k in before) and any(
        k.startswith("packs/") for k in before
    )  # both kinds of content are there to rewrap

    out = json.loads(backup_ok(env, "recipients", "remove", "--repo", backend, b_pub,
                               "--add", c_pub, "--identity", str(a), "--json"))  # fmt: skip
    assert out["added"] == [c_pub] and out["removed"] == [b_pub]
    assert out["recipients"] == [a_pub, c_pub]
    listed = json.loads(backup_ok(env, "recipients", "list", "--repo", backend, "--json"))
    assert listed["recipients"] == [a_pub, c_pub]

    after = _encrypted_files(store)
    # The payloads are the same bytes: only headers were written anew (and packs renamed).
    assert _payloads(after) == _payloads(before)
    assert out["bytes_stored"] == sum(len(d) for d in before.values())
    assert out["header_bytes"] < out["bytes_written"] / 10
    for key, data in after.items():
        assert _age_opens(c, data), f"{key} does not open with the added key"
        assert not _age_opens(b, data), f"{key} still opens with the removed key"
    # Old snapshots read whole with the new key, and not at all with the removed one.
    code, report = verify_json(env, backend, "--read-data", "--identity", str(c))
    assert code == 0 and report["ok"], report
    refused = backup(env, "show", "--repo", backend, "latest", "--identity", str(b))
    assert refused.returncode == 1 and "cannot decrypt" in one_error_line(refused)
    # The next run (the box reads config.json) encrypts to the new set.
    backup_run(env, backend, odoo)
    newest = sorted(k for k in store.list("snapshots"))[-1]
    body = authenticated_body(store.get(newest))
    assert _age_opens(c, body) and not _age_opens(b, body)
    assert show(env, backend, "latest", "--identity", str(c))["filestore"]["count"] > 0


def test_ssh_keys_are_added_and_used_to_rewrap(odoo, local_env, tmp_path):
    env = local_env
    repo = str(tmp_path / "repo")
    a, a_pub = _key(tmp_path, "admin")
    ed, ed_pub = _ssh_key(tmp_path, "ed25519")
    rsa, rsa_pub = _ssh_key(tmp_path, "rsa")
    backup_ok(env, "init", "--repo", repo, "--recipient", a_pub)
    backup_run(env, repo, odoo)
    backup_ok(env, "recipients", "add", "--repo", repo, ed_pub, rsa_pub, "--identity", str(a))
    canonical = [" ".join(k.split()[:2]) for k in (ed_pub, rsa_pub)]  # comments dropped
    listed = json.loads(backup_ok(env, "recipients", "list", "--repo", repo, "--json"))
    assert listed["recipients"] == [a_pub, *canonical]
    store = store_for(repo, None)
    for data in _encrypted_files(store).values():
        assert _age_opens(ed, data) and _age_opens(rsa, data) and _age_opens(a, data)
    # An SSH key rewraps too; the age key removed, only the SSH keys read it.
    backup_ok(env, "recipients", "remove", "--repo", repo, a_pub, "--identity", str(ed))
    for data in _encrypted_files(store).values():
        assert _age_opens(rsa, data) and not _age_opens(a, data)
    code, report = verify_json(env, repo, "--read-data", "--identity", str(rsa))
    assert code == 0, report


def test_refusals_change_nothing(odoo, local_env, tmp_path):
    env = local_env
    repo = str(tmp_path / "repo")
    a, a_pub = _key(tmp_path, "admin")
    stranger, stranger_pub = _key(tmp_path, "stranger")
    backup_ok(env, "init", "--repo", repo, "--recipient", a_pub)
    backup_run(env, repo, odoo)
    store = store_for(repo, None)
    before = _encrypted_files(store) | {"config.json": store.get("config.json")}

    admin = ["--identity", str(a)]
    cases = [
        (["remove", a_pub, *admin], "no recipient"),  # nobody could read it
        (["remove", stranger_pub, *admin], "not a recipient of this repository"),
        (["add", stranger_pub, "--identity", str(stranger)], "not one of the repository's"),
        (["add", stranger_pub], "pass --identity"),
    ]
    for args, message in cases:
        refused = backup(env, "recipients", args[0], "--repo", repo, *args[1:])
        assert refused.returncode == 2 and message in one_error_line(refused), refused.stderr
    assert _encrypted_files(store) | {"config.json": store.get("config.json")} == before

    plain = str(tmp_path / "plain")
    backup_ok(env, "init", "--repo", plain)
    refused = backup(env, "recipients", "add", "--repo", plain, stranger_pub,
                     "--identity", str(a))  # fmt: skip
    assert refused.returncode == 2 and "copy all" in one_error_line(refused)


def _rekey_killed_at(env, repo: str, args: list[str], step: str) -> None:
    """`recipients ARGS`, SIGKILLed (its process group) right after `step`, a counted call of
    its store (tests/backup/killpoints): `put:packs:1` is its first pack written."""
    kill_env = with_killpoints(env, kill_at=f"{step}:after")
    child = subprocess.run([str(ODBOX_BACKUP), "recipients", *args, "--repo", repo],
                           env=kill_env, capture_output=True, text=True,
                           start_new_session=True)  # fmt: skip
    assert child.returncode == -signal.SIGKILL, (step, child.returncode, child.stderr)


# One kill in each step of a rotation (rekey.py): config.json written; a manifest; an object
# alone (its index not yet); an index of objects alone; a new pack without its index; an old
# pack's index deleted (the old pack left over); an old pack deleted.
KILLS = ["put:config.json:1", "put:snapshots:1", "put:objects:1", "put:index:1",
         "put:packs:1", "delete:index:1", "delete:packs:2"]  # fmt: skip


def test_a_killed_rotation_leaves_every_snapshot_readable_and_a_rerun_finishes_it(
    odoo, backend, env, tmp_path, request
):
    """Kill the rotation in each of its steps, each time on what the last kill left (the
    first kill in `remove --add`, then in `rewrap`, which finishes what config.json says):
    after each kill every snapshot reads whole with the admin's key (kept in both sets); the
    last rewrap leaves nothing the removed key opens. Objects stored alone may meanwhile
    differ from their index's size (their header grew), which verify names and the rewrap
    mends."""
    repo = backend
    (a, _), (b, b_pub), (c, c_pub) = _repository_of_a_and_b(env, repo, odoo, tmp_path)
    ids = [s["id"] for s in json.loads(backup_ok(env, "list", "--repo", repo, "--json"))]
    args = ["remove", b_pub, "--add", c_pub, "--identity", str(a)]
    for step in KILLS:
        _rekey_killed_at(env, repo, args, step)
        args = ["rewrap", "--identity", str(a)]  # config.json already names the new set
        code, report = verify_json(env, repo, "--read-data", "--identity", str(a))
        assert [s["id"] for s in report["snapshots"] if s["ok"]] == ids, (step, report)
        others = [p for p in report["problems"] if "its index says" not in p]
        assert others == [], (step, report["problems"])
    backup_ok(env, "recipients", *args, "--repo", repo)
    code, report = verify_json(env, repo, "--read-data", "--identity", str(c))
    assert code == 0 and report["ok"] and report["orphan_packs"] == 0, report
    for key, data in _encrypted_files(store_for(repo, moto_for(repo, request))).items():
        assert not _age_opens(b, data), key
