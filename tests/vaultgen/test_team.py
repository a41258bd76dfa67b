"""A team: each admin decrypts with a key of their own listed in recipients.txt (--identity),
so taking one admin's access back is a rekey, not a new shared key for everyone else."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pexpect

from tests.vaultgen.helpers import (
    VAULTGEN,
    age_decrypt,
    assert_refused,
    changed,
    clean_env,
    clone_of,
    new_age_key,
    one_error_line,
    snapshot,
    spawn,
    vaultgen,
    vaultgen_ok,
)


def ssh_key(path: Path, passphrase: str = "") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", path], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def team_vault(vault: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The vault with Bob (SSH key) and Carol (age key) as recipients; Bob's clone of it,
    which has no age.key: only the .age files, the public files and his own key."""
    bob, carol = tmp_path / "bob_ed25519", tmp_path / "carol.key"
    (vault / "recipients.txt").write_text(f"{ssh_key(bob)} bob\n{new_age_key(carol)}\n")
    vaultgen_ok(vault, "generate", "--batch")
    clone = clone_of(vault, tmp_path / "bob-clone")
    (clone / "age.key").unlink()
    (clone / ".lock").touch(mode=0o600)  # as any earlier run leaves it
    return clone, bob, carol


def test_a_recipient_generates_and_sets_passwords_with_their_own_key(vault, tmp_path):
    clone, bob, carol = team_vault(vault, tmp_path)
    vaultgen_ok(clone, "generate", "--batch", "--identity", str(bob))
    assert (clone / "passwords/root.txt").read_bytes() == (
        vault / "passwords/root.txt"
    ).read_bytes()
    vaultgen_ok(clone, "password", "admin", "--stdin", "--identity", str(bob), input="set by bob")
    vaultgen_ok(clone, "check", "--identity", str(bob))
    for identity in (vault / "age.key", bob, carol):  # still encrypted to everyone
        assert age_decrypt(clone / "passwords/admin.txt.age", identity).stdout == b"set by bob"
    assert not (clone / "age.key").exists(), "no shared key was made"
    manifest = json.loads((clone / "manifest.json").read_text())
    assert manifest["identity"] == json.loads((vault / "manifest.json").read_text())["identity"]
    for path in clone.rglob("*.age"):  # git pull, on the machine that holds age.key
        (vault / path.relative_to(clone)).write_bytes(path.read_bytes())
    (vault / "manifest.json").write_bytes((clone / "manifest.json").read_bytes())
    vaultgen_ok(vault, "generate", "--batch")
    assert (vault / "passwords/admin.txt").read_text() == "set by bob"
    vaultgen_ok(vault, "check")


def test_the_identity_option_also_comes_from_the_environment(vault, tmp_path):
    clone, bob, _ = team_vault(vault, tmp_path)
    result = vaultgen(clone, "generate", "--batch", env=clean_env(VAULTGEN_IDENTITY=str(bob)))
    assert result.returncode == 0, result.stderr
    vaultgen_ok(clone, "status", "--identity", str(bob))


def test_removing_a_teammate_is_a_rekey_with_your_own_key(vault, tmp_path):
    clone, bob, carol = team_vault(vault, tmp_path)
    recipients = clone / "recipients.txt"
    recipients.write_text(recipients.read_text().splitlines()[0] + "\n")  # Carol leaves
    result = vaultgen_ok(clone, "rekey", "--identity", str(bob))
    assert "re-encrypted 18 .age files" in result.stdout
    assert not (clone / "age.key").exists()
    for path in clone.rglob("*.age"):
        assert age_decrypt(path, carol).returncode != 0, f"Carol still opens {path}"
        assert age_decrypt(path, bob).returncode == 0
        assert age_decrypt(path, vault / "age.key").returncode == 0, "age.key is kept"
    vaultgen_ok(clone, "generate", "--batch", "--identity", str(bob))
    vaultgen_ok(clone, "check", "--identity", str(bob))


def test_rekey_refuses_to_lock_out_the_one_who_runs_it(vault, tmp_path):
    clone, bob, _ = team_vault(vault, tmp_path)
    recipients = clone / "recipients.txt"
    recipients.write_text(recipients.read_text().splitlines()[1] + "\n")  # Bob removes himself
    assert_refused(clone, "rekey", "--identity", str(bob), message="lock you out")


def test_a_key_that_is_no_recipient_is_refused_by_name(vault, tmp_path):
    clone, _, _ = team_vault(vault, tmp_path)
    mallory = tmp_path / "mallory"
    ssh_key(mallory)
    before = snapshot(clone)
    result = vaultgen(clone, "generate", "--batch", "--identity", str(mallory))
    assert result.returncode == 1
    assert "is not a recipient of this vault" in one_error_line(result)
    assert changed(before, snapshot(clone)) == set()


class TestASecretKeyInRecipients:
    def test_an_age_secret_key_is_refused_loudly(self, vault):
        secret = next(
            line for line in (vault / "age.key").read_text().splitlines() if line.startswith("AGE")
        )
        (vault / "recipients.txt").write_text(f"# pasted by mistake\n{secret}\n")
        before = snapshot(vault)
        for command in ("generate", "rekey"):
            result = vaultgen(vault, command)
            assert result.returncode == 2
            warning, error = result.stderr.strip().splitlines()
            assert "!!! " in warning and "recipients.txt:2 is a SECRET KEY" in warning
            assert "leaked" in warning
            assert "error:" in error and "holds a private key" in error
            assert secret not in result.stderr, "the secret is not repeated"
        assert changed(before, snapshot(vault)) == set()
        result = vaultgen(vault, "check")
        assert result.returncode == 3
        assert "holds a private key" in result.stdout

    def test_an_openssh_private_key_is_refused_loudly(self, vault, tmp_path):
        ssh_key(tmp_path / "id")
        (vault / "recipients.txt").write_text((tmp_path / "id").read_text())
        result = vaultgen(vault, "generate", "--batch")
        assert result.returncode == 2
        assert "recipients.txt:1 is a SECRET KEY" in result.stderr


def wrap_with_passphrase(key: Path, passphrase: str) -> Path:
    """`age -p`: the identity file encrypted with a passphrase (scrypt), as age documents."""
    wrapped = key.with_suffix(".age")
    child = pexpect.spawn("age", ["-p", "-o", str(wrapped), str(key)], timeout=60)
    child.expect("passphrase")
    child.sendline(passphrase)
    child.expect("(?i)confirm")
    child.sendline(passphrase)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    key.unlink()
    return wrapped


class TestPassphraseProtectedIdentities:
    def test_an_age_p_wrapped_identity_asks_as_age_does(self, vault, tmp_path):
        clone, _, carol = team_vault(vault, tmp_path)
        wrapped = wrap_with_passphrase(carol, "carol's long passphrase")
        child = spawn(clone, "generate", "--batch", "--identity", str(wrapped))
        child.expect(f'Enter passphrase for identity file "{wrapped}"')
        child.sendline("carol's long passphrase")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.before
        assert (clone / "passwords/root.txt").read_bytes() == (
            vault / "passwords/root.txt"
        ).read_bytes()

    def test_a_wrong_passphrase_is_one_line_and_changes_nothing(self, vault, tmp_path):
        clone, _, carol = team_vault(vault, tmp_path)
        wrapped = wrap_with_passphrase(carol, "carol's long passphrase")
        child = spawn(clone, "rekey", "--identity", str(wrapped))
        child.expect("Enter passphrase")
        child.sendline("not it")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 2
        assert b"wrong passphrase" in child.before
        assert b"Traceback" not in child.before

    def test_a_passphrase_protected_ssh_key_asks_as_age_does(self, vault, tmp_path):
        dave = tmp_path / "dave_ed25519"
        (vault / "recipients.txt").write_text(ssh_key(dave, "dave's passphrase") + "\n")
        vaultgen_ok(vault, "generate", "--batch")
        clone = clone_of(vault, tmp_path / "clone")
        (clone / "age.key").unlink()
        child = spawn(clone, "password", "admin", "--generate", "--identity", str(dave))
        child.expect(f'Enter passphrase for "{dave}"')
        child.sendline("dave's passphrase")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.before
        assert age_decrypt(clone / "passwords/admin.txt.age", vault / "age.key").returncode == 0

    def test_without_a_terminal_it_says_so_instead_of_reading_stdin(self, vault, tmp_path):
        clone, _, carol = team_vault(vault, tmp_path)
        wrapped = wrap_with_passphrase(carol, "carol's long passphrase")
        result = subprocess.run(
            [VAULTGEN, "--vault", clone, "generate", "--identity", wrapped],
            input="carol's long passphrase\n", capture_output=True, text=True,
            env=clean_env(), start_new_session=True,  # no controlling terminal
        )  # fmt: skip
        assert result.returncode == 2
        assert "no terminal to ask" in one_error_line(result)


def test_edit_with_a_passphrase_protected_key_asks_once(vault, tmp_path):
    clone, _, carol = team_vault(vault, tmp_path)
    wrapped = wrap_with_passphrase(carol, "carol's long passphrase")
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nprintf 'edited by carol' > \"$1\"\n")
    editor.chmod(0o755)
    child = pexpect.spawn(
        str(VAULTGEN), ["--vault", str(clone), "--identity", str(wrapped), "edit", "admin"],
        env=clean_env(EDITOR=str(editor)), timeout=60,
    )  # fmt: skip
    child.expect("Enter passphrase for identity file")
    child.sendline("carol's long passphrase")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert b"Enter passphrase" not in child.before, "asked a second time"
    assert age_decrypt(clone / "passwords/admin.txt.age", vault / "age.key").stdout == (
        b"edited by carol"
    )


def test_a_new_recipient_is_shown_before_anyone_commits_what_it_can_read(vault, tmp_path):
    """recipients.txt is committed: a line someone else pushed there gets every secret on the
    next run, so whenever the set changes, vaultgen names every recipient."""
    intruder = new_age_key(tmp_path / "intruder.key")
    (vault / "recipients.txt").write_text(f"{intruder}\n")
    result = vaultgen_ok(vault, "generate", "--batch")
    assert "now encrypted to 2 recipients" in result.stderr
    assert intruder in result.stderr
    assert "recipients" not in vaultgen_ok(vault, "generate", "--batch").stderr  # same set
    assert intruder in vaultgen_ok(vault, "rekey").stderr


def test_an_rsa_key_in_the_old_pem_format_is_an_identity_too(vault, tmp_path):
    erin = tmp_path / "erin_rsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", erin],
        check=True,
    )  # fmt: skip
    assert erin.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    (vault / "recipients.txt").write_text(erin.with_suffix(".pub").read_text())
    vaultgen_ok(vault, "generate", "--batch")
    clone = clone_of(vault, tmp_path / "clone")
    (clone / "age.key").unlink()
    vaultgen_ok(clone, "generate", "--batch", "--identity", str(erin))
    out = vaultgen_ok(clone, "decrypt", "passwords/root.txt.age", "--identity", str(erin))
    assert out.stdout == (vault / "passwords/root.txt").read_text()
