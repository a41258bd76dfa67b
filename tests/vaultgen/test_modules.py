"""The plain modules under the command line, called directly."""

from __future__ import annotations

import errno
import os

import pytest

from odbox_common import age
from odbox_common.errors import ToolError as VaultError
from odbox_common.errors import UsageError
from vaultgen import agecrypt, crypthash, layout, passphrase, pki
from vaultgen.files import Transaction


class TestTransaction:
    def test_a_file_that_cannot_be_staged_leaves_every_target_untouched(self, tmp_path):
        first = tmp_path / "first"
        first.write_bytes(b"old")
        (tmp_path / "not-a-dir").write_bytes(b"a file where a folder should be")
        with pytest.raises(VaultError), Transaction() as tx:
            tx.stage(first, b"new", 0o600)
            tx.stage(tmp_path / "not-a-dir/second", b"new", 0o600)
        assert first.read_bytes() == b"old"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "not-a-dir"]

    def test_a_full_disk_during_staging_is_reported_as_such(self, tmp_path, monkeypatch):
        target = tmp_path / "target"
        target.write_bytes(b"old")

        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", no_space)
        with pytest.raises(VaultError, match="no space left"), Transaction() as tx:
            tx.stage(target, b"new", 0o600)
        assert target.read_bytes() == b"old"
        assert [p.name for p in tmp_path.iterdir()] == ["target"]

    def test_committed_files_have_the_asked_mode_whatever_the_umask(self, tmp_path):
        old = os.umask(0o077)
        try:
            with Transaction() as tx:
                tx.stage(tmp_path / "public", b"x", 0o644)
        finally:
            os.umask(old)
        assert (tmp_path / "public").stat().st_mode & 0o777 == 0o644

    def test_a_rename_that_fails_removes_every_staged_file_left(self, tmp_path):
        (tmp_path / "b").mkdir()
        (tmp_path / "b/occupied").write_text("a folder cannot be replaced by a file")
        with pytest.raises(VaultError), Transaction() as tx:
            tx.stage(tmp_path / "a", b"1", 0o600)
            tx.stage(tmp_path / "b", b"2", 0o600)
            tx.stage(tmp_path / "c", b"3", 0o600)
        assert (tmp_path / "a").read_bytes() == b"1"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


class TestNames:
    @pytest.mark.parametrize("name", ["root", "odoo-admin", "backup.s3", "A_1"])
    def test_good_password_names(self, name):
        assert layout.check_name(name) == name

    @pytest.mark.parametrize(
        "name", ["", ".hidden", "-x", "a/b", "../up", 'x"; DROP ROLE admin; --', "a" * 65]
    )
    def test_bad_password_names(self, name):
        with pytest.raises(UsageError):
            layout.check_name(name)

    @pytest.mark.parametrize(
        ("cn", "stem"),
        [("localhost", "localhost"), ("*.example.com", "wildcard.example.com"), ("::1", "__1")],
    )
    def test_cert_file_stems(self, cn, stem):
        assert layout.cert_stem(cn) == stem

    @pytest.mark.parametrize("cn", ["bad name", "-x.com", "a..b", "*", "x/y", "*.*.com"])
    def test_bad_common_names(self, cn):
        with pytest.raises(UsageError):
            layout.check_common_name(cn)


def test_a_generated_passphrase_has_at_least_90_bits():
    assert passphrase.entropy_bits() >= 90
    words = passphrase.generate_passphrase().split(passphrase.SEPARATOR)
    assert len(words) == passphrase.WORDS
    assert len({passphrase.generate_passphrase() for _ in range(50)}) == 50


def test_no_listed_word_holds_the_separator():
    # "felt-tip" once made an 8-part passphrase out of 7 words.
    words = passphrase._wordlist()
    assert len(words) > 7000
    assert all(word.isalpha() and passphrase.SEPARATOR not in word for word in words)


def test_libxcrypt_hashes_verify_and_reject_other_passwords():
    for method, prefix in (("sha512", "$6$"), ("yescrypt", "$y$")):
        hashed = crypthash.hash_password("pässwörd with ünïcode", method)  # type: ignore[arg-type]
        assert hashed.startswith(prefix)
        assert crypthash.verify_password("pässwörd with ünïcode", hashed)
        assert not crypthash.verify_password("password", hashed)
    assert not crypthash.verify_password("x", "not a hash")
    with pytest.raises(VaultError):
        crypthash.hash_password("nul\0byte", "sha512")


def test_certificates_are_renewed_when_their_time_comes(tmp_path):
    """The state cache remembers the renewal date: a run 800 days later renews."""
    import datetime as dt

    from vaultgen.generate import Planner, generate
    from vaultgen.plans import Request

    generate(tmp_path / "vault", Request())
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=800)
    plan = Planner(tmp_path / "vault", Request(), now=later).plan()
    renewed = {w.path: w.reason for w in plan.writes}
    assert renewed["certs/localhost-cert.pem"].startswith("expires within 30 days")
    assert "certs/vault-ca-cert.pem" not in renewed  # the CA is good for ten years
    assert "passwords/root.yesc" not in renewed


def test_a_leaf_cannot_outlive_825_days():
    ca_key = pki.new_private_key_pem()
    ca = pki.make_ca_cert(ca_key)
    with pytest.raises(VaultError, match="1 to 825 days"):
        pki.make_leaf_cert(pki.new_private_key_pem(), "x.example", ["x.example"], ca, ca_key, 826)


def test_recipients_file_errors_name_the_line(tmp_path):
    path = tmp_path / "recipients.txt"
    path.write_text("# comment\n\nssh-ed25519 AAAAnotbase64\n")
    with pytest.raises(VaultError, match=r"recipients.txt:3"):
        agecrypt.parse_recipients_file(path)


def test_recipient_fingerprint_ignores_order_and_comments():
    a = age.parse_recipient(age.generate_identity()[1], "a")
    b = age.parse_recipient(age.generate_identity()[1], "b")
    assert age.recipients_fingerprint([a, b]) == age.recipients_fingerprint([b, a])
    assert age.recipients_fingerprint([a]) != age.recipients_fingerprint([a, b])
