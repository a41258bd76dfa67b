"""Tags: `run --tag`, `tag add/remove`, `list --tag`, `prune --keep-tag`, on a folder and on S3."""

from __future__ import annotations

import json
import re

from pyrage import x25519

from tests.backup.conftest import moto_for
from tests.backup.helpers import backup, backup_ok, backup_run, show, store_for, verify_json
from tests.helpers import one_error_line


def _listed(env, repo, *extra):
    return json.loads(backup_ok(env, "list", "--repo", repo, "--json", *extra))


def test_run_tag_list_tag_and_tag_add_remove(odoo, backend, env, tmp_path):
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo, "--tag", "pre-deploy", "--tag", "odoo-17")
    backup_run(env, backend, odoo)
    first, second = (r["id"] for r in _listed(env, backend))
    assert [r["tags"] for r in _listed(env, backend)] == [["odoo-17", "pre-deploy"], []]
    assert show(env, backend, first)["tags"] == ["odoo-17", "pre-deploy"]
    assert [r["id"] for r in _listed(env, backend, "--tag", "pre-deploy")] == [first]
    assert _listed(env, backend, "--tag", "pre-deploy,other") == []  # all of one list
    assert [r["id"] for r in _listed(env, backend, "--tag", "x", "--tag", "odoo-17")] == [first]

    out = json.loads(backup_ok(env, "tag", "add", "--repo", backend, second, "keep", "--json"))
    assert out == {"schema": 1, "snapshot": second, "id": second, "tags": ["keep"], "changed": True}
    again = backup_ok(env, "tag", "add", "--repo", backend, second, "keep")
    assert again.strip().endswith(f"snapshot {second}: tags keep (unchanged)")
    backup_ok(env, "tag", "remove", "--repo", backend, first, "odoo-17")
    assert [r["tags"] for r in _listed(env, backend)] == [["pre-deploy"], ["keep"]]
    # The manifest written again is authenticated, and still names every object.
    code, report = verify_json(env, backend, "--read-data")
    assert code == 0 and report["ok"]
    assert re.search(r"\ntags +pre-deploy\n", backup_ok(env, "show", "--repo", backend, first))
    # A copy carries the tags (the manifest goes over whole).
    offsite = str(tmp_path / "offsite")
    backup_ok(env, "init", "--repo", offsite)
    backup_ok(env, "copy", "--repo", backend, "all", "--to", offsite)
    assert [r["tags"] for r in _listed(env, offsite)] == [["pre-deploy"], ["keep"]]


def test_prune_keep_tag_keeps_the_pre_upgrade_snapshot_whatever_the_policy(odoo, backend, env):
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo, "--tag", "pre-upgrade")
    for _ in range(3):
        backup_run(env, backend, odoo)
    ids = [r["id"] for r in _listed(env, backend)]
    report = json.loads(backup_ok(env, "prune", "--repo", backend, "--keep-last", "1",
                                  "--keep-tag", "pre-upgrade", "--json"))  # fmt: skip
    kept = {s["id"]: s["reasons"] for s in report["snapshots"] if s["keep"]}
    # The tag takes no place: --keep-last 1 still keeps the newest as well.
    assert kept == {ids[0]: ["tag pre-upgrade"], ids[-1]: ["last"]}
    assert [r["id"] for r in _listed(env, backend)] == [ids[0], ids[-1]]
    # A tag alone is a policy (restic's): everything else goes.
    backup_ok(env, "prune", "--repo", backend, "--keep-tag", "pre-upgrade")
    assert [r["id"] for r in _listed(env, backend)] == [ids[0]]
    code, report = verify_json(env, backend, "--read-data")
    assert code == 0 and report["ok"]


def test_tags_of_an_encrypted_repository_stay_encrypted_and_need_the_identity(
    odoo, backend, env, tmp_path, request
):
    key = x25519.Identity.generate()
    identity = tmp_path / "key.txt"
    identity.write_text(str(key) + "\n")
    backup_ok(env, "init", "--repo", backend, "--recipient", str(key.to_public()))
    backup_run(env, backend, odoo, "--tag", "pre-deploy")  # the box tags without the identity
    [row] = _listed(env, backend, "--identity", str(identity), "--tag", "pre-deploy")

    refused = backup(env, "tag", "add", "--repo", backend, row["id"], "secret-tag")
    assert refused.returncode == 2
    assert "pass --identity" in one_error_line(refused)
    refused = backup(env, "list", "--repo", backend, "--tag", "pre-deploy")
    assert refused.returncode == 2 and "pass --identity" in one_error_line(refused)

    backup_ok(env, "tag", "add", "--repo", backend, row["id"], "secret-tag",
              "--identity", str(identity))  # fmt: skip
    store = store_for(backend, moto_for(backend, request))
    stored = store.get(f"snapshots/{row['id']}")
    assert b"secret-tag" not in stored and b"age-encryption.org/v1" in stored
    [again] = _listed(env, backend, "--identity", str(identity))
    assert again["tags"] == ["pre-deploy", "secret-tag"]


def test_bad_tag_names_are_refused_before_anything_is_written(odoo, backend, env):
    backup_ok(env, "init", "--repo", backend)
    for bad in ("", "-x", "a b", "a,b", "x" * 65, "é"):
        result = backup(env, "run", "--repo", backend, "--db", odoo[0], "--filestore",
                        str(odoo[2]), "--tag", bad)  # fmt: skip
        assert result.returncode == 2, bad
        assert "is not a tag" in one_error_line(result)
    assert _listed(env, backend) == []


def test_a_manifest_whose_tags_were_changed_without_the_key_is_refused(odoo, backend, env, request):
    """Whoever can write to the bucket cannot add or drop a tag (and so make prune keep or
    forget a snapshot): the tag is inside the MAC."""
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    [row] = _listed(env, backend)
    store = store_for(backend, moto_for(backend, request))
    import zstandard

    stored = store.get(f"snapshots/{row['id']}")
    mac_line, body = stored.split(b"\n", 1)
    manifest = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(body))
    manifest["tags"] = ["pre-upgrade"]
    forged = zstandard.ZstdCompressor().compress(json.dumps(manifest).encode())
    store.put(f"snapshots/{row['id']}", mac_line + b"\n" + forged)
    result = backup(env, "list", "--repo", backend, "--json")
    assert json.loads(result.stdout) == [] and "MAC does not match" in result.stderr
    result = backup(env, "prune", "--repo", backend, "--keep-tag", "pre-upgrade", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["unauthenticated"] == [row["id"]]
