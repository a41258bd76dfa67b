"""Whether a file is what it should be, given what it is made from: one verdict for
`generate` (which remakes what fails) and `check` (which reports it)."""

from __future__ import annotations

import datetime as dt

from odbox_common.errors import ToolError as VaultError
from vaultgen.layout import Kind

MIN_PASSWORD_LENGTH = 8


def password_from_bytes(data: bytes, where: str) -> str:
    """A password file holds one line; a single trailing newline (an editor's) is not part of it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise VaultError(f"{where} is not UTF-8 text") from None
    if text.endswith("\n"):
        text = text[:-1].removesuffix("\r")
    return text


def password_problem(password: str) -> str:
    if "\n" in password or "\r" in password or "\0" in password:
        return "a password is one line, without NUL bytes"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    return ""


def check_password(password: str, where: str) -> str:
    if problem := password_problem(password):
        raise VaultError(f"{where}: {problem}")
    return password


def hash_problem(kind: Kind, password: bytes, hashed_file: bytes) -> str:
    from vaultgen import crypthash

    hashed = hashed_file.decode("ascii", errors="replace").removesuffix("\n")
    expected: crypthash.Method = "sha512" if kind is Kind.SHA512 else "yescrypt"
    if crypthash.method_of(hashed) != expected or "\n" in hashed:
        return f"is not a single {expected} crypt hash"
    if not crypthash.verify_password(password_from_bytes(password, "password"), hashed):
        return "does not match its password"
    return ""


def ssh_public_problem(public: bytes, private: bytes) -> str:
    from vaultgen.sshkey import public_key_line

    if public.split()[:2] != public_key_line(private).split()[:2]:
        return "does not match ssh/id_ed25519"
    return ""


def cert_problem(
    kind: Kind,
    cert: bytes,
    key: bytes | None,
    ca_cert: bytes | None,
    *,
    from_vault_ca: bool,
    now: dt.datetime,
) -> str:
    """Why a certificate is unusable or due: key mismatch, not signed by the vault CA (for the
    certificates the vault issues), rejected by TLS clients, or expiring within 30 days."""
    from vaultgen import pki

    try:
        info = pki.cert_info(cert, "certificate")
        if key is not None and not pki.key_matches_cert(key, cert, "key"):
            return "does not match its key"
    except VaultError:
        return "unreadable"
    if kind is Kind.CA_CERT:
        if not info.is_ca:
            return "is not a CA certificate (CA:TRUE)"
    else:
        if from_vault_ca and ca_cert is not None and not pki.signed_by(cert, ca_cert):
            return "not signed by the current vault CA"
        if problem := pki.tls_server_problem(info, now):
            return problem
    if pki.needs_renewal(info, now):
        return f"expires within 30 days ({info.not_after:%Y-%m-%d})"
    return ""
