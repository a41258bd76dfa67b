"""`vaultgen check`: each kind of problem is found, named, and gives exit 3."""

from __future__ import annotations

import json
import subprocess

from tests.vaultgen.conftest import git
from tests.vaultgen.helpers import (
    changed,
    replace_leaf_with_short_lived_cert,
    snapshot,
    vaultgen,
    vaultgen_ok,
)


def problems(vault) -> dict[str, str]:
    """Each file's problems, joined by ' | '."""
    result = vaultgen(vault, "check", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == (0 if report["ok"] else 3)
    found: dict[str, list[str]] = {}
    for p in report["problems"]:
        found.setdefault(p["path"], []).append(p["problem"])
    return {path: " | ".join(lines) for path, lines in found.items()}


def test_a_healthy_vault_in_git_has_no_problems(vault_in_git):
    result = vaultgen_ok(vault_in_git, "check")
    assert "no problems" in result.stdout
    assert problems(vault_in_git) == {}


def test_a_tampered_age_file_is_found(vault):
    target = vault / "passwords/admin.txt.age"
    data = bytearray(target.read_bytes())
    data[len(data) - 20] ^= 0x01  # one bit of the payload
    target.write_bytes(bytes(data))
    assert "does not decrypt" in problems(vault)["passwords/admin.txt.age"]


def test_an_age_file_replaced_by_a_valid_one_with_other_content_is_found(vault, tmp_path):
    recipient = vault.joinpath("age.key").read_text().split("public key: ")[1].split()[0]
    subprocess.run(
        ["age", "-r", recipient, "-o", vault / "passwords/root.txt.age"],
        input=b"not the password", check=True,
    )  # fmt: skip
    found = problems(vault)
    assert "holds something else" in found["passwords/root.txt.age"]


def test_a_hash_that_does_not_match_its_password_is_found(vault):
    other = (vault / "passwords/admin.sha512").read_bytes()
    (vault / "passwords/root.sha512").write_bytes(other)
    assert problems(vault)["passwords/root.sha512"] == "does not match its password"


def test_a_certificate_expiring_within_30_days_is_found(vault):
    replace_leaf_with_short_lived_cert(vault, days=20)
    assert "expires within 30 days" in problems(vault)["certs/localhost-cert.pem"]


def test_a_secret_with_loose_permissions_is_found(vault):
    (vault / "passwords/root.txt").chmod(0o644)
    (vault / "ssh").chmod(0o755)
    found = problems(vault)
    assert "mode 0644" in found["passwords/root.txt"]
    assert "mode 0755" in found["ssh"] and "want 0700" in found["ssh"]


def test_a_cleartext_file_git_would_not_ignore_is_found(vault_in_git):
    with (vault_in_git / ".gitignore").open("a") as f:
        f.write("!passwords/root.txt\n")
    found = problems(vault_in_git)
    assert "cleartext that git would commit" in found["passwords/root.txt"]


def test_age_files_git_would_ignore_are_found(vault_in_git):
    (vault_in_git.parent / ".gitignore").write_text("vault/\n")  # the whole folder, by mistake
    found = problems(vault_in_git)
    assert "ignored by git" in found["ssh/id_ed25519.age"]
    assert "ignored by git" in found["manifest.json"]


def test_cleartext_tracked_by_git_is_found(vault_in_git):
    git(vault_in_git.parent, "add", "-f", "vault/passwords/root.txt")
    assert "tracked by git" in problems(vault_in_git)["passwords/root.txt"]


def test_cleartext_anywhere_in_git_history_is_found(vault_in_git):
    repo = vault_in_git.parent
    git(repo, "add", "-f", "vault/passwords/root.txt")
    git(repo, "commit", "-qm", "oops")
    git(repo, "rm", "-q", "--cached", "vault/passwords/root.txt")
    git(repo, "commit", "-qm", "fix")
    found = problems(vault_in_git)
    assert "in git history" in found["passwords/root.txt"]
    assert "rotate" in found["passwords/root.txt"]


def test_a_short_or_multi_line_password_is_found(vault):
    (vault / "passwords/admin.txt").write_text("")
    (vault / "passwords/root.txt").write_text("one\ntwo\n")
    found = problems(vault)
    assert "at least 8 characters" in found["passwords/admin.txt"]
    assert "one line" in found["passwords/root.txt"]


def test_left_over_files_are_found(vault):
    vaultgen_ok(vault, "password", "backup-s3", "--generate")
    for path in vault.glob("passwords/backup-s3.txt*"):
        path.unlink()  # the password removed, its hashes forgotten
    found = problems(vault)
    assert "left over" in found["passwords/backup-s3.sha512.age"]
    assert "left over" in found["passwords/backup-s3.yesc"]


def test_a_symbolic_link_in_the_vault_is_found(vault, tmp_path):
    (tmp_path / "elsewhere").write_text("not a vault file\n")
    (vault / "passwords/root.txt").unlink()
    (vault / "passwords/root.txt").symlink_to(tmp_path / "elsewhere")
    assert "symbolic link" in problems(vault)["passwords/root.txt"]


def test_the_table_names_the_file_and_the_problem_and_changes_nothing(vault):
    (vault / "passwords/root.txt").chmod(0o640)
    before = snapshot(vault)
    result = vaultgen(vault, "check")
    assert result.returncode == 3
    assert "passwords/root.txt" in result.stdout and "mode 0640" in result.stdout
    assert changed(before, snapshot(vault)) == set()


def test_check_works_from_the_age_files_alone(vault):
    """In a fresh clone there is no cleartext: check decrypts and verifies in memory."""
    for path in vault.rglob("*"):
        if path.is_file() and path.suffix not in (".age", ".pub") and path.name not in (
            "age.key", "manifest.json", ".gitignore"
        ):  # fmt: skip
            path.unlink()
    assert not (vault / "passwords/root.txt").exists()
    assert problems(vault) == {}
    (vault / "passwords/root.sha512.age").write_bytes(
        (vault / "passwords/admin.sha512.age").read_bytes()
    )
    assert "does not match its password" in problems(vault)["passwords/root.sha512"]
