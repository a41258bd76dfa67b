"""`vaultgen generate`: the whole layout from nothing, nothing on a second run, and exactly
what depends on a change when something changes (decided from content, not file times)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from tests.vaultgen.helpers import (
    RECORDS,
    assert_refused,
    changed,
    one_error_line,
    replace_leaf_with_short_lived_cert,
    snapshot,
    spawn,
    vaultgen,
    vaultgen_ok,
)

ODBOX_BACKUP = Path(sys.executable).with_name("odbox-backup")
PASSWORDS = ["root", "admin", "odoo-admin", "pgadmin-admin"]
SECRETS = [
    *(f"passwords/{n}.{ext}" for n in PASSWORDS for ext in ("txt", "sha512", "yesc")),
    "certs/vault-ca-key.pem",
    "certs/localhost-key.pem",
    "ssh/id_ed25519",
    "backup-auth.key",
]
PUBLIC_CLEARTEXT = ["certs/vault-ca-cert.pem", "certs/localhost-cert.pem"]
ENCRYPTED = SECRETS + PUBLIC_CLEARTEXT


def test_generate_in_an_empty_folder_makes_the_whole_layout(tmp_path):
    root = tmp_path / "vault"
    root.mkdir()
    vaultgen_ok(root, "generate", "--batch")
    files = snapshot(root)
    expected = {
        "age.key", ".gitignore", "manifest.json", "ssh/id_ed25519.pub",
        *ENCRYPTED, *(p + ".age" for p in ENCRYPTED),
    }  # fmt: skip
    assert expected <= files.keys()
    assert files.keys() - expected <= {".lock", ".vaultgen-state.json"}
    for secret in [*SECRETS, "age.key"]:
        assert files[secret].mode == 0o600, secret
    for folder in (root, root / "passwords", root / "certs", root / "ssh"):
        assert folder.stat().st_mode & 0o777 == 0o700
    assert files["age.key"].data.decode().splitlines()[-1].startswith("AGE-SECRET-KEY-1")
    for name in PASSWORDS:
        password = files[f"passwords/{name}.txt"].data.decode()
        assert len(password.split("-")) == 7 and "\n" not in password


def test_a_second_generate_changes_no_file(vault):
    before = snapshot(vault)
    result = vaultgen_ok(vault, "generate", "--batch")
    assert changed(before, snapshot(vault)) == set()
    assert "is up to date" in result.stdout


def test_without_a_command_vaultgen_generates(tmp_path):
    root = tmp_path / "vault"
    vaultgen_ok(root, input="")
    assert (root / "passwords/root.yesc.age").is_file()


def test_a_fresh_clone_gets_its_cleartext_back_from_the_age_files(vault, tmp_path):
    clone = tmp_path / "clone"
    for path in vault.rglob("*"):
        if path.suffix == ".age" or path.name in ("age.key", "manifest.json", ".gitignore"):
            target = clone / path.relative_to(vault)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())  # new mtimes, as a clone has
    before = snapshot(clone)
    vaultgen_ok(clone, "generate", "--batch")
    after = snapshot(clone)
    assert {p for p in changed(before, after) if p.endswith(".age")} == set()
    for path in ENCRYPTED:
        assert after[path].data == (vault / path).read_bytes(), path
    assert after["ssh/id_ed25519.pub"].data == (vault / "ssh/id_ed25519.pub").read_bytes()


def test_a_changed_password_remakes_its_two_hashes_and_its_age_files_and_nothing_else(vault):
    (vault / "passwords/admin.txt").write_text("a new admin password")
    before = snapshot(vault)
    vaultgen_ok(vault, "generate", "--batch")
    after = snapshot(vault)
    assert changed(before, after) - RECORDS == {
        "passwords/admin.sha512", "passwords/admin.yesc",
        "passwords/admin.txt.age", "passwords/admin.sha512.age", "passwords/admin.yesc.age",
    }  # fmt: skip
    assert after["passwords/admin.sha512"].data.startswith(b"$6$")
    assert after["passwords/admin.yesc"].data.startswith(b"$y$")


def test_a_deleted_ca_is_remade_and_every_leaf_is_signed_again(vault):
    vaultgen_ok(vault, "certs", "odoo.example.com")
    for path in vault.glob("certs/vault-ca-*"):
        path.unlink()
    before = snapshot(vault)
    vaultgen_ok(vault, "generate", "--batch")
    after = snapshot(vault)
    leaf_certs = {"certs/localhost-cert.pem", "certs/odoo.example.com-cert.pem"}
    ca = {"certs/vault-ca-key.pem", "certs/vault-ca-cert.pem"}
    remade = ca | leaf_certs
    assert changed(before, after) - RECORDS == remade | {p + ".age" for p in remade}
    for leaf in sorted(leaf_certs):
        subprocess.run(
            ["openssl", "verify", "-CAfile", vault / "certs/vault-ca-cert.pem", vault / leaf],
            check=True, capture_output=True,
        )  # fmt: skip


def test_a_new_recipient_re_encrypts_every_age_file_and_nothing_else(vault, tmp_path):
    subprocess.run(["age-keygen", "-o", tmp_path / "teammate.key"], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", tmp_path / "teammate.key"], check=True, capture_output=True, text=True
    ).stdout
    (vault / "recipients.txt").write_text(f"# a teammate\n{public}")
    before = snapshot(vault)
    vaultgen_ok(vault, "generate", "--batch")
    after = snapshot(vault)
    ages = {p for p in before if p.endswith(".age")}
    assert changed(before, after) - RECORDS - {"recipients.txt"} == ages


def test_an_age_file_changed_by_git_pull_updates_the_cleartext(vault, tmp_path):
    teammate = tmp_path / "teammate"
    shutil.copytree(vault, teammate)
    vaultgen_ok(teammate, "password", "root", "--stdin", input="set by a teammate\n")
    for path in teammate.glob("passwords/root.*.age"):  # what `git pull` brings
        shutil.copy(path, vault / path.relative_to(teammate))
    shutil.copy(teammate / "manifest.json", vault / "manifest.json")
    before = snapshot(vault)
    vaultgen_ok(vault, "generate", "--batch")
    after = snapshot(vault)
    assert after["passwords/root.txt"].data == b"set by a teammate"
    assert {p for p in changed(before, after) if p.endswith(".age")} == set()
    assert after["passwords/root.yesc"].data == (teammate / "passwords/root.yesc").read_bytes()


def test_cleartext_and_age_that_both_changed_are_refused_and_nothing_changes(vault, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(vault, other)
    vaultgen_ok(other, "password", "admin", "--generate")
    for path in other.glob("passwords/admin.*.age"):  # git pull
        shutil.copy(path, vault / path.relative_to(other))
    shutil.copy(other / "manifest.json", vault / "manifest.json")
    (vault / "passwords/admin.txt").write_text("edited here too")
    before = snapshot(vault)
    result = vaultgen(vault, "generate", "--batch")
    assert result.returncode == 1
    assert "cannot tell which is newer" in one_error_line(result)
    assert changed(before, snapshot(vault)) == set()


def test_a_certificate_expiring_within_30_days_is_renewed(vault):
    replace_leaf_with_short_lived_cert(vault, days=20)
    vaultgen_ok(vault, "generate", "--batch")
    dates = subprocess.run(
        ["openssl", "x509", "-noout", "-checkend", str(800 * 86400),
         "-in", vault / "certs/localhost-cert.pem"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert dates.returncode == 0, "the renewed certificate should be valid for 825 days"


def test_loose_modes_are_tightened_without_rewriting_files(vault):
    (vault / "passwords/root.txt").chmod(0o644)
    (vault / "certs").chmod(0o755)
    before = snapshot(vault)
    result = vaultgen_ok(vault, "generate", "--batch")
    assert "tightened" in result.stdout
    after = snapshot(vault)
    assert after["passwords/root.txt"].mode == 0o600
    assert after["passwords/root.txt"].data == before["passwords/root.txt"].data
    assert (vault / "certs").stat().st_mode & 0o777 == 0o700


def test_on_a_terminal_generate_asks_for_each_missing_password(tmp_path):
    root = tmp_path / "vault"
    child = spawn(root, "generate")
    child.expect("Password for admin")
    child.sendline("correct horse battery staple")
    child.expect("again")
    child.sendline("correct horse battery staple")
    for name in ("odoo-admin", "pgadmin-admin", "root"):
        child.expect(f"Password for {name}")
        child.sendline("")  # empty: a generated passphrase
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (root / "passwords/admin.txt").read_text() == "correct horse battery staple"
    assert len((root / "passwords/root.txt").read_text().split("-")) == 7


def test_generate_batch_never_prompts_even_on_a_terminal(tmp_path):
    root = tmp_path / "vault"
    child = spawn(root, "generate", "--batch")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert b"Password for" not in child.before


class TestPasswordCommand:
    def test_from_stdin_sets_the_password_and_its_hashes(self, vault):
        vaultgen_ok(vault, "password", "admin", "--stdin", input="from standard input\n")
        assert (vault / "passwords/admin.txt").read_text() == "from standard input"
        vaultgen_ok(vault, "check")

    def test_from_a_file(self, vault, tmp_path):
        (tmp_path / "pw").write_text("from a file, one line\n")
        vaultgen_ok(vault, "password", "backup-s3", "--file", str(tmp_path / "pw"))
        assert (vault / "passwords/backup-s3.txt").read_text() == "from a file, one line"
        assert (vault / "passwords/backup-s3.yesc.age").is_file()

    def test_generate_makes_a_new_passphrase(self, vault):
        old = (vault / "passwords/root.txt").read_text()
        vaultgen_ok(vault, "password", "root", "--generate")
        assert (vault / "passwords/root.txt").read_text() != old

    def test_the_same_password_again_changes_nothing(self, vault):
        current = (vault / "passwords/root.txt").read_text()
        before = snapshot(vault)
        vaultgen_ok(vault, "password", "root", "--stdin", input=current)
        assert changed(before, snapshot(vault)) == set()

    @pytest.mark.parametrize(
        ("args", "stdin", "code", "message"),
        [
            (["admin", "--stdin"], "short", 1, "at least 8 characters"),
            (["admin", "--stdin"], "two\nlines\n", 1, "one line"),
            (["admin", "--stdin", "--generate"], "", 2, "choose one of"),
            (["admin"], "", 2, "not a terminal"),
            (["x'; DROP TABLE"], "", 2, "invalid password name"),
        ],
    )
    def test_bad_input_is_refused_and_changes_nothing(self, vault, args, stdin, code, message):
        assert_refused(vault, "password", *args, code=code, message=message, stdin=stdin)


class TestCertsCommand:
    def test_issues_a_leaf_with_the_given_names(self, vault):
        vaultgen_ok(
            vault, "certs", "odoo.example.com", "--san", "www.example.com", "--san", "10.0.0.5"
        )
        text = subprocess.run(
            ["openssl", "x509", "-noout", "-ext", "subjectAltName",
             "-in", vault / "certs/odoo.example.com-cert.pem"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "DNS:odoo.example.com" in text
        assert "DNS:www.example.com" in text
        assert "IP Address:10.0.0.5" in text

    def test_the_same_names_again_change_nothing_and_new_names_reissue(self, vault):
        vaultgen_ok(vault, "certs", "odoo.example.com", "--san", "www.example.com")
        before = snapshot(vault)
        vaultgen_ok(vault, "certs", "odoo.example.com", "--san", "www.example.com")
        assert changed(before, snapshot(vault)) == set()
        vaultgen_ok(vault, "certs", "odoo.example.com")
        assert changed(before, snapshot(vault)) - RECORDS == {
            "certs/odoo.example.com-cert.pem", "certs/odoo.example.com-cert.pem.age"
        }  # fmt: skip

    def test_a_wildcard_is_stored_under_a_shell_friendly_name(self, vault):
        vaultgen_ok(vault, "certs", "*.example.com")
        assert (vault / "certs/wildcard.example.com-cert.pem.age").is_file()
        vaultgen_ok(vault, "check")


class TestImportCommand:
    @staticmethod
    def self_signed(tmp_path: Path, cn: str, name: str, san: bool = True) -> tuple[Path, Path]:
        cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        extra = ["-addext", f"subjectAltName=DNS:{cn}"] if san else []
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-subj", f"/CN={cn}", "-days", "90", *extra, "-keyout", key, "-out", cert],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert, key

    def test_a_certificate_clients_would_reject_is_refused(self, vault, tmp_path):
        cert, key = self.self_signed(tmp_path, "shop.example.com", "nosan", san=False)
        assert_refused(vault, "import", str(cert), str(key), message="not among its SANs")

    def test_imports_a_matching_pair_and_keeps_it_when_the_ca_changes(self, vault, tmp_path):
        cert, key = self.self_signed(tmp_path, "shop.example.com", "shop")
        vaultgen_ok(vault, "import", str(cert), str(key))
        assert (vault / "certs/shop.example.com-cert.pem").read_bytes() == cert.read_bytes()
        for path in vault.glob("certs/vault-ca-*"):
            path.unlink()
        vaultgen_ok(vault, "generate", "--batch")
        assert (vault / "certs/shop.example.com-cert.pem").read_bytes() == cert.read_bytes()

    def test_a_key_of_another_certificate_is_refused_and_nothing_changes(self, vault, tmp_path):
        cert, _ = self.self_signed(tmp_path, "shop.example.com", "a")
        _, other_key = self.self_signed(tmp_path, "shop.example.com", "b")
        assert_refused(
            vault, "import", str(cert), str(other_key), "--name", "shop",
            message="is not the private key of",
        )  # fmt: skip


class TestHandEditedPasswords:
    @pytest.mark.parametrize(
        ("content", "message"),
        [("", "at least 8 characters"), ("short", "at least 8"), ("one\ntwo\n", "one line")],
    )
    def test_an_unusable_password_is_refused_and_nothing_changes(self, vault, content, message):
        (vault / "passwords/admin.txt").write_text(content)
        assert_refused(vault, "generate", "--batch", message=message)

    @pytest.mark.parametrize("ending", ["\n", "\r\n"])
    def test_an_editors_line_ending_is_removed_everywhere(self, vault, ending):
        (vault / "passwords/admin.txt").write_bytes(f"edited in an editor{ending}".encode())
        vaultgen_ok(vault, "generate", "--batch")
        assert (vault / "passwords/admin.txt").read_bytes() == b"edited in an editor"
        decrypted = vaultgen_ok(vault, "decrypt", "passwords/admin.txt.age").stdout
        assert decrypted == "edited in an editor"
        vaultgen_ok(vault, "check")


class TestCertificateNamesAreKept:
    def test_generate_right_after_certs_changes_nothing(self, vault):
        vaultgen_ok(vault, "certs", "odoo.example.com", "--days", "90")
        before = snapshot(vault)
        vaultgen_ok(vault, "generate", "--batch")
        assert changed(before, snapshot(vault)) == set()

    def test_a_deleted_certificate_comes_back_with_its_names_and_validity(self, vault):
        vaultgen_ok(vault, "certs", "odoo.example.com", "--san", "www.example.com",
                    "--san", "192.0.2.10", "--days", "90")  # fmt: skip
        for path in vault.glob("certs/odoo.example.com-cert.pem*"):
            path.unlink()
        vaultgen_ok(vault, "generate", "--batch")
        cert = vault / "certs/odoo.example.com-cert.pem"
        text = subprocess.run(
            ["openssl", "x509", "-noout", "-text", "-in", cert],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "DNS:odoo.example.com, DNS:www.example.com, IP Address:192.0.2.10" in text
        end = subprocess.run(
            ["openssl", "x509", "-noout", "-checkend", str(91 * 86400),
             "-in", vault / "certs/odoo.example.com-cert.pem"], capture_output=True,
        )  # fmt: skip
        assert end.returncode == 1, "still a 90-day certificate"

    def test_an_ipv6_certificate_comes_back_with_its_address(self, vault):
        vaultgen_ok(vault, "certs", "2001:db8::1")
        (vault / ".vaultgen-state.json").unlink()
        (vault / "manifest.json").write_text(
            (vault / "manifest.json").read_text().replace('"2001_db8__1"', '"gone"')
        )  # no record of its names: they come from the file name alone
        for path in vault.glob("certs/2001_db8__1-cert.pem*"):
            path.unlink()
        vaultgen_ok(vault, "generate", "--batch")
        text = subprocess.run(
            ["openssl", "x509", "-noout", "-ext", "subjectAltName",
             "-in", vault / "certs/2001_db8__1-cert.pem"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "IP Address:2001:DB8:0:0:0:0:0:1" in text

    def test_days_below_the_renewal_window_are_refused(self, vault):
        result = vaultgen(vault, "certs", "x.example.com", "--days", "20")
        assert result.returncode == 2
        assert "'--days'" in one_error_line(result)


class TestImportSafety:
    def test_an_imported_certificate_from_another_vault_is_never_re_signed(self, vault, tmp_path):
        other = tmp_path / "other"
        vaultgen_ok(other, "generate", "--batch")
        vaultgen_ok(other, "certs", "shop.example.com")
        cert, key = (
            other / "certs/shop.example.com-cert.pem",
            other / "certs/shop.example.com-key.pem",
        )
        vaultgen_ok(vault, "import", str(cert), str(key))
        (vault / ".vaultgen-state.json").unlink()  # as in a fresh clone
        vaultgen_ok(vault, "generate", "--batch")
        assert (vault / "certs/shop.example.com-cert.pem").read_bytes() == cert.read_bytes()
        vaultgen_ok(vault, "check")

    def test_a_combined_key_and_certificate_file_keeps_the_key_out_of_the_certificate(
        self, vault, tmp_path
    ):
        cert, key = TestImportCommand.self_signed(tmp_path, "erp.example.com", "erp")
        both = tmp_path / "both.pem"
        both.write_bytes(key.read_bytes() + cert.read_bytes())
        vaultgen_ok(vault, "import", str(both), str(both), "--name", "erp3")
        assert b"PRIVATE KEY" not in (vault / "certs/erp3-cert.pem").read_bytes()
        assert b"CERTIFICATE" not in (vault / "certs/erp3-key.pem").read_bytes()
        vaultgen_ok(vault, "check")

    def test_a_certificate_expiring_soon_is_imported_with_a_warning(self, vault, tmp_path):
        cert, key = tmp_path / "soon.crt", tmp_path / "soon.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-subj", "/CN=soon.example.com", "-addext",
             "subjectAltName=DNS:soon.example.com", "-days", "5", "-keyout", key, "-out", cert],
            check=True, capture_output=True,
        )  # fmt: skip
        result = vaultgen_ok(vault, "import", str(cert), str(key))
        assert "warning:" in result.stderr and "renew it soon" in result.stderr


def test_enter_at_the_prompt_keeps_an_existing_password(vault):
    old = (vault / "passwords/root.txt").read_bytes()
    child = spawn(vault, "password", "root")
    child.expect("Password for root")
    child.sendline("")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert b"unchanged" in child.before
    assert (vault / "passwords/root.txt").read_bytes() == old


def test_ctrl_c_at_a_prompt_says_so_and_writes_nothing(tmp_path):
    root = tmp_path / "vault"
    child = spawn(root, "generate")
    child.expect("Password for admin")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert b"interrupted" in child.before
    assert not (root / "age.key").exists()


def test_the_backup_authentication_key_is_made_once_and_odbox_backup_takes_it(vault, tmp_path):
    """The admin restores elsewhere (a laptop, a new box) with the vault: it holds the key
    the box signs its repository with, decrypted like any other secret."""
    key = vault / "backup-auth.key"
    first = key.read_bytes()
    assert key.stat().st_mode & 0o777 == 0o600 and (vault / "backup-auth.key.age").exists()
    vaultgen_ok(vault, "generate", "--batch")
    assert key.read_bytes() == first  # kept, never made anew
    copy = tmp_path / "laptop" / "backup-auth.key"
    copy.parent.mkdir()
    vaultgen_ok(vault, "decrypt", "backup-auth.key.age", "--identity", str(vault / "age.key"),
                "--out", str(copy), "--mode", "0600")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODBOX_")}
    made = subprocess.run([str(ODBOX_BACKUP), "init", "--repo", str(tmp_path / "repo"),
                           "--auth-key-file", str(copy)], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "wrote a new authentication key" not in made.stdout  # the vault's was taken
    assert copy.read_bytes() == first


def test_a_backup_authentication_key_edited_into_garbage_is_refused(vault):
    before = snapshot(vault)
    (vault / "backup-auth.key").write_text("odbox-backup-auth-key-1:not hex\n")
    result = vaultgen(vault, "generate", "--batch")
    assert result.returncode != 0
    assert "is not an odbox-backup authentication key" in one_error_line(result)
    assert changed(before, snapshot(vault)) == {"backup-auth.key"}  # only what was edited
