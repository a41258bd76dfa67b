"""A `.age` file vaultgen did not write: age encrypts to public keys, so anyone who can push a
commit can encrypt a password of their choosing to the vault. vaultgen takes only what
manifest.json records, or what the user accepts by name."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from tests.vaultgen.conftest import git
from tests.vaultgen.helpers import (
    assert_refused,
    changed,
    clone_of,
    one_error_line,
    snapshot,
    vaultgen,
    vaultgen_ok,
)

FORGED = "chosen by whoever pushed"


def forge(vault: Path, rel: str, password: str = FORGED) -> None:
    """What anyone with push access can do: encrypt to the public keys manifest.json names."""
    recipient = json.loads((vault / "manifest.json").read_text())["identity"]
    subprocess.run(["age", "-r", recipient, "-o", vault / rel], input=password.encode(), check=True)


def test_a_forged_age_file_stops_generate_and_check_names_it(vault_in_git):
    vault = vault_in_git
    git(vault.parent, "add", "-A")
    git(vault.parent, "commit", "-qm", "the vault")
    forge(vault, "passwords/admin.txt.age")  # and `git pull` brings it
    before = snapshot(vault)
    result = vaultgen(vault, "generate", "--batch")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "passwords/admin.txt.age" in line and "forged" in line and "--accept-age" in line
    assert changed(before, snapshot(vault)) == set()
    result = vaultgen(vault, "check", "--json")
    assert result.returncode == 3
    problems = {p["path"]: p["problem"] for p in json.loads(result.stdout)["problems"]}
    assert "forged" in problems["passwords/admin.txt.age"]
    assert (vault / "passwords/admin.txt").read_text() != FORGED


def test_a_forged_age_file_is_not_decrypted_into_a_fresh_clone(vault, tmp_path):
    clone = clone_of(vault, tmp_path / "clone")
    forge(clone, "passwords/root.txt.age")
    result = vaultgen(clone, "generate", "--batch")
    assert result.returncode == 1
    assert "passwords/root.txt.age" in one_error_line(result)
    assert not list(clone.glob("passwords/*.txt")), "nothing is decrypted"
    assert not list(clone.glob("passwords/*.sha512"))


def test_an_age_file_the_manifest_does_not_record_is_refused(vault):
    forge(vault, "passwords/intruder.txt.age")
    assert_refused(vault, "generate", "--batch", message="passwords/intruder.txt.age")
    assert not (vault / "passwords/intruder.sha512").exists()


def test_a_vault_whose_manifest_was_deleted_trusts_none_of_its_age_files(vault, tmp_path):
    clone = clone_of(vault, tmp_path / "clone")
    (clone / "manifest.json").unlink()
    result = vaultgen(clone, "generate", "--batch")
    assert result.returncode == 1
    assert "not as manifest.json records" in one_error_line(result)
    assert not list(clone.glob("passwords/*.txt"))


def test_rekey_does_not_launder_a_forged_file(vault):
    forge(vault, "certs/vault-ca-key.pem.age", "-----BEGIN PRIVATE KEY----- forged")
    assert_refused(vault, "rekey", message="certs/vault-ca-key.pem.age")
    assert_refused(vault, "rekey", "--new-identity", message="certs/vault-ca-key.pem.age")
    assert not (vault / "age.key.new").exists()


def test_a_file_written_with_age_is_adopted_when_accepted_by_name(vault):
    forge(vault, "passwords/admin.txt.age", "set with age by hand")
    vaultgen_ok(
        vault, "generate", "--batch", "--accept-age", str(vault / "passwords/admin.txt.age")
    )
    assert (vault / "passwords/admin.txt").read_text() == "set with age by hand"
    vaultgen_ok(vault, "check")
    before = snapshot(vault)
    vaultgen_ok(vault, "generate", "--batch")  # accepted once: recorded since
    assert changed(before, snapshot(vault)) == set()


def test_a_journal_of_pending_files_that_came_with_a_commit_vouches_for_nothing(vault_in_git):
    """.vaultgen-pending.json lets a run finish what a killed one renamed; pushed by someone
    else (git add -f), it must not make their .age look like ours."""
    vault = vault_in_git
    forge(vault, "passwords/admin.txt.age")
    digest = hashlib.sha256((vault / "passwords/admin.txt.age").read_bytes()).hexdigest()
    journal = vault / ".vaultgen-pending.json"
    journal.write_text(json.dumps({"age_sha256": [digest]}))
    journal.chmod(0o600)
    git(vault.parent, "add", "-f", "vault/.vaultgen-pending.json")
    result = vaultgen(vault, "generate", "--batch")
    assert result.returncode == 1
    assert "passwords/admin.txt.age" in one_error_line(result)
    problems = {
        p["path"]: p["problem"]
        for p in json.loads(vaultgen(vault, "check", "--json").stdout)["problems"]
    }
    assert "local to each checkout" in problems[".vaultgen-pending.json"]
    journal.chmod(0o644)  # and one not private to this user, untracked
    git(vault.parent, "rm", "-q", "--cached", "vault/.vaultgen-pending.json")
    result = vaultgen(vault, "generate", "--batch")
    assert result.returncode == 1
    assert "passwords/admin.txt.age" in one_error_line(result)
