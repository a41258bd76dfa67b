"""`vaultgen rekey`: re-encrypt everything, from a clone that has only `.age` files and a key."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

from tests.vaultgen.helpers import (
    age_decrypt,
    assert_refused,
    changed,
    clone_of,
    one_error_line,
    snapshot,
    vaultgen,
    vaultgen_ok,
)


def test_rekey_new_identity_in_a_fresh_clone_re_encrypts_everything(vault, tmp_path):
    clone = clone_of(vault, tmp_path / "clone")
    old_key = tmp_path / "old.key"
    shutil.copy(clone / "age.key", old_key)
    result = vaultgen_ok(clone, "rekey", "--new-identity")
    assert "re-encrypted 18 .age files" in result.stdout
    assert (clone / "age.key").read_bytes() != old_key.read_bytes()
    for path in sorted(clone.rglob("*.age")):
        new = age_decrypt(path, clone / "age.key")
        assert new.returncode == 0, path
        assert new.stdout == (vault / path.relative_to(clone)).with_suffix("").read_bytes()
        assert age_decrypt(path, old_key).returncode != 0, f"the old key still opens {path}"
    assert not list(clone.glob("passwords/*.txt")), "rekey does not write cleartext"
    vaultgen_ok(clone, "generate", "--batch")  # restores the cleartext from the new .age files
    vaultgen_ok(clone, "check")


def test_rekey_without_a_new_identity_applies_the_recipients(vault, tmp_path):
    host = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host], check=True)
    clone = clone_of(vault, tmp_path / "clone")
    (clone / "recipients.txt").write_text(host.with_suffix(".pub").read_text())
    vaultgen_ok(clone, "rekey")
    for path in clone.rglob("*.age"):
        assert age_decrypt(path, host).returncode == 0
        assert age_decrypt(path, clone / "age.key").returncode == 0
    vaultgen_ok(clone, "generate", "--batch")
    vaultgen_ok(clone, "check")


def test_an_interrupted_rekey_is_finished_by_running_it_again(vault, tmp_path):
    """The state a kill leaves: age.key.new exists and only some files use it."""
    subprocess.run(["age-keygen", "-o", vault / "age.key.new"], check=True, capture_output=True)
    new_recipient = subprocess.run(
        ["age-keygen", "-y", vault / "age.key.new"], capture_output=True, text=True, check=True
    ).stdout.strip()
    half = sorted(vault.rglob("*.age"))[::2]
    for path in half:
        subprocess.run(["age", "-r", new_recipient, "-o", path, path.with_suffix("")], check=True)
    # and the journal it keeps of the files it renamed before the manifest that records them
    written = [hashlib.sha256(path.read_bytes()).hexdigest() for path in half]
    (vault / ".vaultgen-pending.json").write_text(json.dumps({"age_sha256": written}))
    (vault / ".vaultgen-pending.json").chmod(0o600)
    result = vaultgen(vault, "generate", "--batch")
    assert result.returncode == 1
    assert "interrupted `vaultgen rekey --new-identity`" in one_error_line(result)
    vaultgen_ok(vault, "rekey", "--new-identity")
    assert not (vault / "age.key.new").exists()
    assert new_recipient in (vault / "age.key").read_text()
    for path in vault.rglob("*.age"):
        assert age_decrypt(path, vault / "age.key").stdout == path.with_suffix("").read_bytes()
    vaultgen_ok(vault, "check")


def test_a_teammate_with_the_old_key_gets_a_clear_message(vault, tmp_path):
    teammate = tmp_path / "teammate"
    shutil.copytree(vault, teammate)
    vaultgen_ok(vault, "rekey", "--new-identity")
    for path in vault.rglob("*.age"):  # git pull
        shutil.copy(path, teammate / path.relative_to(vault))
    shutil.copy(vault / "manifest.json", teammate / "manifest.json")
    result = vaultgen(teammate, "generate", "--batch")
    assert result.returncode == 1
    assert "this vault is encrypted to" in one_error_line(result)


def test_a_bad_recipient_stops_rekey_before_anything_is_written(vault):
    (vault / "recipients.txt").write_text("age1bogus\n")
    assert_refused(vault, "rekey", "--new-identity", code=2, message="recipients.txt:1")


def test_the_old_identity_is_kept_for_old_commits(vault, tmp_path):
    old_copy = tmp_path / "root.txt.age.from-an-old-commit"
    shutil.copy(vault / "passwords/root.txt.age", old_copy)
    old_key = (vault / "age.key").read_bytes()
    result = vaultgen_ok(vault, "rekey", "--new-identity")
    kept = list(vault.glob("age.key.old-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == old_key
    assert kept[0].stat().st_mode & 0o777 == 0o600
    assert kept[0].name in result.stdout
    assert age_decrypt(old_copy, kept[0]).stdout == (vault / "passwords/root.txt").read_bytes()
    assert age_decrypt(vault / "passwords/root.txt.age", kept[0]).returncode != 0
    vaultgen_ok(vault, "check")  # the kept key is a secret file: 0600 and ignored by git


def test_after_rekey_generate_has_nothing_to_do(vault):
    vaultgen_ok(vault, "rekey", "--new-identity")
    before = snapshot(vault)
    vaultgen_ok(vault, "generate", "--batch")
    assert changed(before, snapshot(vault)) == set()


def test_age_files_vaultgen_does_not_manage_are_left_alone(vault):
    stray = vault / "passwords/notes.age"
    stray.write_bytes((vault / "passwords/root.txt.age").read_bytes())
    before = stray.read_bytes()
    result = vaultgen_ok(vault, "rekey")
    assert "not managed by vaultgen" in result.stderr
    assert stray.read_bytes() == before
