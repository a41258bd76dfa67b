"""The one place that talks age (through pyrage): identities, recipients, encrypt, decrypt."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage

from vaultgen.errors import VaultError

AGE_SECRET_PREFIX = "AGE-SECRET-KEY-1"  # noqa: S105 (a format prefix, no secret)
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa")
AGE_HEADERS = (b"age-encryption.org/v1\n", b"-----BEGIN AGE ENCRYPTED FILE-----")


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
    public: str | None = None  # its recipient as recipients.txt spells it (age1…, "ssh-… AAAA")


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


# What a private key looks like, in any of the forms age and OpenSSH write one.
SECRET_KEY_MARKERS = (AGE_SECRET_PREFIX, "AGE-PLUGIN-", "PRIVATE KEY-----")


class SecretKeyInRecipients(VaultError):
    """A private key pasted where only public keys belong (a file that git commits)."""


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
        if any(marker in line.upper() for marker in SECRET_KEY_MARKERS):
            from vaultgen import console

            console.warn(
                f"!!! {path}:{number} is a SECRET KEY, not a public recipient. "
                f"{path.name} is committed: delete that line now. If it was ever committed or "
                "pushed, that key is leaked: remove it from the recipients, make a new one "
                "and rekey (`vaultgen rekey --new-identity` if it was age.key) !!!"
            )
            raise SecretKeyInRecipients(
                f"{path}:{number} holds a private key: refusing to use {path.name} until that "
                "line is gone (put the public key there: `age-keygen -y KEY`, or the .pub file)"
            )
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


Ask = Callable[[str], str]


def ask_on_terminal(prompt: str) -> str:
    """A passphrase from the controlling terminal, as age asks for one; never from stdin."""
    import getpass

    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        raise NoTerminal from None
    return getpass.getpass(prompt)


class NoTerminal(Exception):
    """There is no terminal to ask a passphrase on."""


def _unlocked(where: str, what: str, ask: Ask) -> str:
    prompt = (
        f'Enter passphrase for identity file "{where}": '
        if what == "age"
        else f'Enter passphrase for "{where}": '
    )
    try:
        return ask(prompt)
    except NoTerminal:
        raise VaultError(
            f"{where} is passphrase-protected and there is no terminal to ask for it: run "
            "this on a terminal"
        ) from None


def _ssh_public(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return " ".join(public.decode().split()[:2])


def _ssh_identity(data: bytes, where: str, ask: Ask) -> Identity:
    """pyrage reads unencrypted keys (OpenSSH or PEM); an OpenSSH key with a passphrase is
    opened by cryptography and handed to pyrage in memory, unencrypted."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        native = pyrage.ssh.Identity.from_buffer(data)
    except pyrage.IdentityError as e:
        if "decrypted first" not in str(e):
            raise VaultError(f"{where}: not a usable SSH private key ({e})") from e
    else:
        public: str | None = None  # unknown: whether it is a recipient, decryption tells
        for load in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
            try:
                public = _ssh_public(load(data, None))
                break
            except (ValueError, TypeError, UnsupportedAlgorithm):
                continue
        return Identity(native, None, public)
    password = _unlocked(where, "ssh", ask).encode()
    try:
        key = serialization.load_ssh_private_key(data, password)
        plain = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        return Identity(pyrage.ssh.Identity.from_buffer(plain), None, _ssh_public(key))
    except ValueError as e:
        raise VaultError(f"{where}: wrong passphrase (or a corrupt key)") from e
    except (pyrage.IdentityError, UnsupportedAlgorithm) as e:
        raise VaultError(f"{where}: not a usable SSH private key ({e})") from e


def parse_identity_file(data: bytes, where: str, ask: Ask = ask_on_terminal) -> list[Identity]:
    """Read an age identity file (age-keygen format, or wrapped by `age -p` with a passphrase)
    or an OpenSSH private key (with or without a passphrase); passphrases are asked on the
    terminal, as age asks for them."""
    if data.lstrip().startswith(AGE_HEADERS):
        passphrase = _unlocked(where, "age", ask)
        try:
            data = bytes(pyrage.passphrase.decrypt(data, passphrase))
        except pyrage.DecryptError as e:
            raise VaultError(f"{where}: wrong passphrase (or not an identity file)") from e
    text = data.decode("utf-8", errors="replace")
    if "PRIVATE KEY-----" in text:
        return [_ssh_identity(data, where, ask)]
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
        public = str(native.to_public())
        identities.append(Identity(native, public, public))
    if not identities:
        raise VaultError(f"{where}: holds no age identity")
    return identities


_unlocked_files: dict[tuple[str, str], list[Identity]] = {}


def load_identity_file(path: Path) -> list[Identity]:
    """An identity file's keys; one a command reads twice (`edit`) asks its passphrase once."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VaultError(f"identity file {path} does not exist") from None
    except OSError as e:
        raise VaultError(f"cannot read identity file {path}: {e.strerror}") from e
    key = (str(path), hashlib.sha256(data).hexdigest())
    if key not in _unlocked_files:
        _unlocked_files[key] = parse_identity_file(data, str(path))
    return _unlocked_files[key]


def vault_recipient(identities: list[Identity], where: str) -> str:
    """The public key of a vault identity file, which must hold an age key (not an SSH key)."""
    recipient = identities[0].recipient
    if recipient is None:
        raise VaultError(
            f"{where} holds an SSH key: the vault identity must be an age key "
            f"({AGE_SECRET_PREFIX}…); SSH keys belong in recipients.txt"
        )
    return recipient


def require_recipient(identities: list[Identity], recipients: list[Recipient], path: Path) -> None:
    """A teammate's key must be one the vault is encrypted to (where its public key is known)."""
    publics = [i.public for i in identities if i.public]
    if publics and not {r.canonical for r in recipients} & set(publics):
        raise VaultError(
            f"{path} ({publics[0][:40]}…) is not a recipient of this vault: ask an admin to add "
            "its public key to recipients.txt and run `vaultgen rekey`"
        )


def recipients_fingerprint(recipients: list[Recipient]) -> str:
    """Names the recipient set a file was encrypted to; order and comments do not matter."""
    joined = "\n".join(sorted({r.canonical for r in recipients}))
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()[:32]


def encrypt(data: bytes, recipients: list[Recipient]) -> bytes:
    try:
        return bytes(pyrage.encrypt(data, [r.native for r in recipients]))
    except pyrage.EncryptError as e:
        raise VaultError(f"age encryption failed: {e}") from e


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
