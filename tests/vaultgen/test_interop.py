"""What vaultgen writes, read by the real programs (age, perl's crypt(), chpasswd, openssl,
ssh-keygen, git), and what those programs write, read by vaultgen."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest

from tests.vaultgen.conftest import git
from tests.vaultgen.helpers import age_decrypt, snapshot, vaultgen, vaultgen_ok

PASSWORDS = ["root", "admin", "odoo-admin", "pgadmin-admin"]


def age_files(vault: Path) -> list[Path]:
    return sorted(vault.rglob("*.age"))


# -- 2. age ------------------------------------------------------------------


def test_every_age_file_decrypts_with_the_age_cli_and_the_vault_key(vault):
    files = age_files(vault)
    assert len(files) == 18  # 4 passwords x 3, CA and leaf cert + key, SSH key, backup key
    for path in files:
        result = age_decrypt(path, vault / "age.key")
        assert result.returncode == 0, f"{path}: {result.stderr!r}"
        assert result.stdout == path.with_suffix("").read_bytes()


def test_with_an_ssh_recipient_the_host_key_decrypts_every_age_file(vault, tmp_path):
    host_key = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
    (vault / "recipients.txt").write_text(f"# the box\n{host_key.with_suffix('.pub').read_text()}")
    vaultgen_ok(vault, "generate", "--batch")
    for path in age_files(vault):
        result = age_decrypt(path, host_key)
        assert result.returncode == 0, f"{path}: {result.stderr!r}"
        assert result.stdout == path.with_suffix("").read_bytes()
        assert age_decrypt(path, vault / "age.key").returncode == 0
    # and vaultgen itself decrypts with the host key, as an activation script would
    out = tmp_path / "admin.txt"
    vaultgen_ok(
        vault, "decrypt", "passwords/admin.txt.age", "--identity", str(host_key),
        "--out", str(out), "--mode", "0400",
    )  # fmt: skip
    assert out.read_bytes() == (vault / "passwords/admin.txt").read_bytes()
    assert out.stat().st_mode & 0o777 == 0o400


def test_an_rsa_host_key_works_as_a_recipient_too(vault, tmp_path):
    host_key = tmp_path / "ssh_host_rsa_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-f", host_key], check=True
    )
    (vault / "recipients.txt").write_text(host_key.with_suffix(".pub").read_text())
    vaultgen_ok(vault, "generate", "--batch")
    result = age_decrypt(vault / "passwords/root.txt.age", host_key)
    assert result.stdout == (vault / "passwords/root.txt").read_bytes()


def test_a_file_the_age_cli_encrypted_to_the_vault_decrypts_with_vaultgen(vault, tmp_path):
    recipient = subprocess.run(
        ["age-keygen", "-y", vault / "age.key"], capture_output=True, text=True, check=True
    ).stdout.strip()
    payload = bytes(range(256)) * 64  # every byte value: binary-safe
    (tmp_path / "blob").write_bytes(payload)
    subprocess.run(
        ["age", "-r", recipient, "-o", tmp_path / "blob.age", tmp_path / "blob"], check=True
    )
    result = vaultgen(vault, "decrypt", str(tmp_path / "blob.age"), input=b"")
    assert result.returncode == 0
    assert result.stdout == payload
    subprocess.run(
        ["age", "--armor", "-r", recipient, "-o", tmp_path / "blob.asc", tmp_path / "blob"],
        check=True,
    )
    assert vaultgen(vault, "decrypt", str(tmp_path / "blob.asc"), input=b"").stdout == payload


# -- 3. crypt hashes -----------------------------------------------------------


def perl_crypt_matches(password: str, hashed: str) -> bool:
    """perl's crypt() is the C library's crypt(): libxcrypt on Debian."""
    result = subprocess.run(
        ["perl", "-e", "print crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? 'yes' : 'no'",
         password, hashed],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout == "yes"


def test_sha512_and_yescrypt_hashes_verify_with_the_system_crypt(vault):
    for name in PASSWORDS:
        password = (vault / f"passwords/{name}.txt").read_text()
        for ext, prefix in (("sha512", "$6$"), ("yesc", "$y$")):
            hashed = (vault / f"passwords/{name}.{ext}").read_text()
            assert hashed.endswith("\n") and hashed.count("\n") == 1, "one line"
            hashed = hashed.rstrip("\n")
            assert hashed.startswith(prefix)
            assert perl_crypt_matches(password, hashed), f"{name}.{ext}"
            assert not perl_crypt_matches(password + "x", hashed)


def test_hashes_made_by_the_system_crypt_are_what_vaultgen_verifies(vault):
    """The other way round: perl's crypt() makes the hash, vaultgen's check accepts it."""
    password = (vault / "passwords/root.txt").read_text()
    for ext, setting in (
        ("sha512", "$6$saltsaltsalt$"),
        ("yesc", "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$"),
    ):
        made = subprocess.run(
            ["perl", "-e", "print crypt($ARGV[0], $ARGV[1])", password, setting],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        (vault / f"passwords/root.{ext}").write_text(made + "\n")
    vaultgen_ok(vault, "generate", "--batch")  # accepted: the hashes are kept, only re-encrypted
    assert (vault / "passwords/root.sha512").read_text().startswith("$6$saltsaltsalt$")
    vaultgen_ok(vault, "check")


@pytest.mark.skipif(os.geteuid() != 0, reason="chpasswd -R (a scratch root) needs root")
def test_hashes_are_single_lines_that_chpasswd_e_accepts(vault, tmp_path):
    etc = tmp_path / "root/etc"
    etc.mkdir(parents=True)
    users = [f"user{i}" for i in range(len(PASSWORDS) * 2)]
    (etc / "passwd").write_text(
        "".join(f"{u}:x:{1000 + i}:100::/:/bin/sh\n" for i, u in enumerate(users))
    )
    (etc / "shadow").write_text("".join(f"{u}:!:19000:0:99999:7:::\n" for u in users))
    (etc / "group").write_text("users:x:100:\n")
    (etc / "gshadow").write_text("users:!::\n")
    expected = {}
    lines = []
    user_iter = iter(users)
    for name in PASSWORDS:
        for ext in ("sha512", "yesc"):
            user = next(user_iter)
            hashed = (vault / f"passwords/{name}.{ext}").read_text().removesuffix("\n")
            expected[user] = ((vault / f"passwords/{name}.txt").read_text(), hashed)
            lines.append(f"{user}:{hashed}\n")
    subprocess.run(
        ["chpasswd", "-e", "-R", tmp_path / "root"], input="".join(lines), text=True, check=True
    )
    shadow = {
        line.split(":")[0]: line.split(":")[1] for line in (etc / "shadow").read_text().splitlines()
    }
    for user, (password, hashed) in expected.items():
        assert shadow[user] == hashed
        assert perl_crypt_matches(password, shadow[user])


# -- 4. certificates -------------------------------------------------------------


def openssl(*args: str | Path) -> str:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, check=True
    ).stdout


def test_the_leaf_verifies_against_the_vault_ca_with_openssl(vault):
    certs = vault / "certs"
    out = openssl("verify", "-CAfile", certs / "vault-ca-cert.pem", certs / "localhost-cert.pem")
    assert out.strip().endswith(": OK")


def _openssl_ca(tmp: Path, name: str, issuer: tuple[Path, Path], ca: bool) -> tuple[Path, Path]:
    """A key and a certificate made and signed by openssl, under `issuer` (cert, key)."""
    key, csr, cert, ext = (tmp / f"{name}{s}" for s in ("-key.pem", ".csr", "-cert.pem", ".ext"))
    ext.write_text(
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        if ca
        else "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost\n"
    )
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-subj", f"/CN={name}", "-out", csr)  # fmt: skip
    openssl("x509", "-req", "-in", csr, "-CA", issuer[0], "-CAkey", issuer[1],
            "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", cert)  # fmt: skip
    return cert, key


def test_the_ca_allows_one_intermediate_as_the_local_ca_uses_and_no_second(vault, tmp_path):
    certs = vault / "certs"
    root = (certs / "vault-ca-cert.pem", certs / "vault-ca-key.pem")
    step = _openssl_ca(tmp_path, "step-ca", root, ca=True)
    leaf = _openssl_ca(tmp_path, "leaf", step, ca=False)
    out = openssl("verify", "-CAfile", root[0], "-untrusted", step[0], leaf[0])
    assert out.strip().endswith(": OK")
    # a CA below the intermediate is beyond the path length: openssl refuses the chain
    second = _openssl_ca(tmp_path, "second", step, ca=True)
    deep = _openssl_ca(tmp_path, "deep", second, ca=False)
    chain = tmp_path / "chain.pem"
    chain.write_text(step[0].read_text() + second[0].read_text())
    refused = subprocess.run(
        ["openssl", "verify", "-CAfile", str(root[0]), "-untrusted", str(chain), str(deep[0])],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode != 0 and "path length" in (refused.stdout + refused.stderr)


def test_the_leaf_is_a_tls_server_certificate_for_its_cn_valid_at_most_825_days(vault):
    leaf = vault / "certs/localhost-cert.pem"
    text = openssl("x509", "-in", leaf, "-noout", "-text")
    assert "Subject: CN = localhost" in text
    assert "DNS:localhost" in text
    assert "TLS Web Server Authentication" in text
    assert "CA:FALSE" in text
    dates = dict(
        line.split("=", 1)
        for line in openssl("x509", "-in", leaf, "-noout", "-dates").split("\n")
        if line
    )
    fmt = "%b %d %H:%M:%S %Y %Z"
    start = dt.datetime.strptime(" ".join(dates["notBefore"].split()), fmt)
    end = dt.datetime.strptime(" ".join(dates["notAfter"].split()), fmt)
    assert dt.timedelta(days=800) < end - start <= dt.timedelta(days=825)


def test_the_ca_is_a_ca_and_private_keys_are_0600_and_match(vault):
    certs = vault / "certs"
    text = openssl("x509", "-in", certs / "vault-ca-cert.pem", "-noout", "-text")
    assert "CA:TRUE" in text
    assert "Certificate Sign" in text
    for stem in ("vault-ca", "localhost"):
        key = certs / f"{stem}-key.pem"
        assert key.stat().st_mode & 0o777 == 0o600
        from_key = openssl("pkey", "-in", key, "-pubout")
        from_cert = openssl("x509", "-in", certs / f"{stem}-cert.pem", "-noout", "-pubkey")
        assert from_key == from_cert


# -- 5. ssh ----------------------------------------------------------------------


def test_ssh_keygen_derives_exactly_the_public_key_vaultgen_wrote(vault):
    key = vault / "ssh/id_ed25519"
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", key], capture_output=True, text=True, check=True
    ).stdout.split()
    written = (vault / "ssh/id_ed25519.pub").read_text().split()
    assert derived[:2] == written[:2]
    assert written[0] == "ssh-ed25519"
    assert key.stat().st_mode & 0o777 == 0o600


# -- 6. git ------------------------------------------------------------------------


def test_git_ignores_every_cleartext_file_and_no_public_one(vault_in_git):
    vault, repo = vault_in_git, vault_in_git.parent
    (vault / "recipients.txt").write_text("# nobody else yet\n")
    for name in ("recipients", "manifest"):  # names of the public files, as passwords
        vaultgen_ok(vault, "password", name, "--generate")
    files = [p for p in snapshot(vault)]
    public = [
        p for p in files
        if p.endswith((".age", ".pub")) or p in ("recipients.txt", "manifest.json", ".gitignore")
    ]  # fmt: skip
    cleartext = [p for p in files if p not in public]
    assert "age.key" in cleartext and "passwords/root.txt" in cleartext
    for path in cleartext:
        result = subprocess.run(["git", "-C", repo, "check-ignore", "-q", f"vault/{path}"])
        assert result.returncode == 0, f"git would commit the cleartext {path}"
    for path in public:
        result = subprocess.run(["git", "-C", repo, "check-ignore", "-q", f"vault/{path}"])
        assert result.returncode == 1, f"git ignores the public file {path}"
    git(repo, "add", "-A")
    committed = set(git(repo, "ls-files").split())
    assert committed == {f"vault/{p}" for p in public}
