"""The one place that talks age (through pyrage): identities, recipients, encrypt, decrypt."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage

from vaultgen.errors import VaultError

AGE_SECRET_PREFIX = "AGE-SECRET-KEY-1"  # noqa: S105 (a format prefix, no secret)
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa")


@dataclass(frozen=True)
class Recipient:
    """A public recipient: `age1…` or an OpenSSH public key (`ssh-ed25519 AAAA…`)."""

    canonical: str  # age1… or "type base64", without the SSH comment
    native: Any  # pyrage.x25519.Recipient | pyrage.ssh.Recipient


@dataclass(frozen=True)
class Identity:
    """A private identity that can decrypt: an age X25519 key or an SSH private key."""

    native: Any
    recipient: str | None  # the public age1… for an age key; None for an SSH key


def parse_recipient(text: str, where: str) -> Recipient:
    text = text.strip()
    try:
        if text.startswith("age1"):
            return Recipient(text, pyrage.x25519.Recipient.from_str(text))
        fields = text.split()
        if len(fields) >= 2 and fields[0] in SSH_KEY_TYPES:
            canonical = f"{fields[0]} {fields[1]}"
            return Recipient(canonical, pyrage.ssh.Recipient.from_str(canonical))
    except pyrage.RecipientError as e:
        raise VaultError(f"{where}: not a valid recipient ({e})") from e
    raise VaultError(
        f"{where}: not a recipient: expected age1… or an ssh-ed25519/ssh-rsa public key"
    )


def parse_recipients_file(path: Path) -> list[Recipient]:
    """Read an age recipients file: one recipient a line, `#` comments and blank lines allowed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise VaultError(f"cannot read {path}: {e}") from e
    recipients = []
    for number, line in enumerate(lines, start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            recipients.append(parse_recipient(line, f"{path}:{number}"))
    return recipients


def generate_identity() -> tuple[str, str]:
    """A new age identity: (AGE-SECRET-KEY-1…, age1…)."""
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def identity_file_text(secret: str, public: str) -> bytes:
    """The same shape `age-keygen` writes, so every age tool reads it."""
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    return f"# created: {created}\n# public key: {public}\n{secret}\n".encode()


def parse_identity_file(data: bytes, where: str) -> list[Identity]:
    """Read an age identity file (age-keygen format) or an unencrypted OpenSSH private key."""
    text = data.decode("utf-8", errors="replace")
    if "PRIVATE KEY-----" in text:
        try:
            return [Identity(pyrage.ssh.Identity.from_buffer(data), None)]
        except pyrage.IdentityError as e:
            raise VaultError(
                f"{where}: not a usable SSH private key ({e}); passphrase-protected keys "
                "are not supported"
            ) from e
    identities = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(AGE_SECRET_PREFIX):
            raise VaultError(
                f"{where}:{number}: not an age identity (expected {AGE_SECRET_PREFIX}…)"
            )
        try:
            native = pyrage.x25519.Identity.from_str(line)
        except pyrage.IdentityError as e:
            raise VaultError(f"{where}:{number}: corrupt age identity ({e})") from e
        identities.append(Identity(native, str(native.to_public())))
    if not identities:
        raise VaultError(f"{where}: holds no age identity")
    return identities


def load_identity_file(path: Path) -> list[Identity]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VaultError(f"identity file {path} does not exist") from None
    except OSError as e:
        raise VaultError(f"cannot read identity file {path}: {e.strerror}") from e
    return parse_identity_file(data, str(path))


def vault_recipient(identities: list[Identity], where: str) -> str:
    """The public key of a vault identity file, which must hold an age key (not an SSH key)."""
    recipient = identities[0].recipient
    if recipient is None:
        raise VaultError(
            f"{where} holds an SSH key: the vault identity must be an age key "
            f"({AGE_SECRET_PREFIX}…); SSH keys belong in recipients.txt"
        )
    return recipient


def recipients_fingerprint(recipients: list[Recipient]) -> str:
    """Names the recipient set a file was encrypted to; order and comments do not matter."""
    joined = "\n".join(sorted({r.canonical for r in recipients}))
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()[:32]


def encrypt(data: bytes, recipients: list[Recipient]) -> bytes:
    try:
        return bytes(pyrage.encrypt(data, [r.native for r in recipients]))
    except pyrage.EncryptError as e:
        raise VaultError(f"age encryption failed: {e}") from e


AGE_HEADERS = (b"age-encryption.org/v1\n", b"-----BEGIN AGE ENCRYPTED FILE-----")


class DecryptFailure(VaultError):
    """A file that does not decrypt; `hint` says why without naming the file."""

    def __init__(self, what: str, hint: str) -> None:
        super().__init__(f"cannot decrypt {what}: {hint}")
        self.hint = hint


def decrypt(data: bytes, identities: list[Identity], what: str) -> bytes:
    if not data.lstrip().startswith(AGE_HEADERS):
        raise DecryptFailure(what, "it is not an age file (tampered, or not a .age file?)")
    try:
        return bytes(pyrage.decrypt(data, [i.native for i in identities]))
    except pyrage.DecryptError as e:
        reason = str(e).rstrip(".")
        if "No matching keys" in reason:
            hint = "it was encrypted to another identity (wrong age.key?)"
        else:
            hint = f"it is corrupt or truncated ({reason}); restore it from git"
        raise DecryptFailure(what, hint) from e
