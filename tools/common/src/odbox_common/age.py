"""The one place that talks age (through pyrage): identities, recipients, encrypt, decrypt.

vaultgen and odbox-backup read recipients and identities with the same rules and
messages: `age1…` or `ssh-ed25519`/`ssh-rsa` public keys (an SSH key's comment is
dropped), blank lines and `#` comments skipped, anything else refused, a private key
where a public one belongs refused without echoing it; age identity files as
age-keygen writes them (or wrapped by `age -p`), OpenSSH private keys with or without a
passphrase (asked on the terminal, as age asks). Needs the `age` extra of odbox-common
(pyrage; cryptography and bcrypt for SSH keys).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pyrage

from odbox_common.errors import ToolError, UsageError

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


class AgeError(UsageError):
    """A recipient or identity that is not one, or cannot be opened: the file or the
    command line given is to fix (exit 2)."""


# What a private key looks like, in any of the forms age and OpenSSH write one.
SECRET_KEY_MARKERS = (AGE_SECRET_PREFIX, "AGE-PLUGIN-", "PRIVATE KEY-----")


class SecretKeyInRecipients(AgeError):
    """A private key pasted where only public keys belong."""


def parse_recipient(text: str, where: str) -> Recipient:
    """One recipient; `where` names it in the message (`FILE:LINE`, `--recipient`)."""
    text = text.strip()
    if any(marker in text.upper() for marker in SECRET_KEY_MARKERS):  # never echoed
        raise SecretKeyInRecipients(
            f"{where} holds a private key, not a public recipient: put its public key there "
            "instead (`age-keygen -y KEY`, or the .pub file)"
        )
    try:
        if text.startswith("age1"):
            return Recipient(text, pyrage.x25519.Recipient.from_str(text))
        fields = text.split()
        if len(fields) >= 2 and fields[0] in SSH_KEY_TYPES:
            canonical = f"{fields[0]} {fields[1]}"
            return Recipient(canonical, pyrage.ssh.Recipient.from_str(canonical))
    except (pyrage.RecipientError, ValueError) as e:
        raise AgeError(f"{where}: not a valid recipient ({e})") from e
    raise AgeError(f"{where}: not a recipient: expected age1… or an ssh-ed25519/ssh-rsa public key")


def is_a_key(text: str) -> bool:
    """Whether `text` is an age or SSH key, public or private (where a path was wanted)."""
    try:
        parse_recipient(text, "")
    except SecretKeyInRecipients:
        return True
    except AgeError:
        return False
    return True


def is_recipient_line(line: str) -> bool:
    """Blank lines and `#` comments of a recipients file are not recipients (age's rule)."""
    return bool(line.strip()) and not line.strip().startswith("#")


def recipient_lines(lines: Iterable[str]) -> list[str]:
    """The recipients of an age recipients file, one a line, stripped."""
    return [line.strip() for line in lines if is_recipient_line(line)]


def parse_recipients(lines: Iterable[str], where: str = "recipient") -> list[Any]:
    """pyrage's recipients of `lines` (blank lines and # comments skipped), for pyrage.encrypt."""
    return [parse_recipient(line, f"{where} {n}").native
            for n, line in enumerate(recipient_lines(lines), start=1)]  # fmt: skip


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
        raise AgeError(
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
            raise AgeError(f"{where}: not a usable SSH private key ({e})") from e
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
        raise AgeError(f"{where}: wrong passphrase (or a corrupt key)") from e
    except (pyrage.IdentityError, UnsupportedAlgorithm) as e:
        raise AgeError(f"{where}: not a usable SSH private key ({e})") from e


def parse_identity_file(data: bytes, where: str, ask: Ask = ask_on_terminal) -> list[Identity]:
    """Read an age identity file (age-keygen format, or wrapped by `age -p` with a passphrase)
    or an OpenSSH private key (with or without a passphrase); passphrases are asked on the
    terminal, as age asks for them."""
    if data.lstrip().startswith(AGE_HEADERS):
        passphrase = _unlocked(where, "age", ask)
        try:
            data = bytes(pyrage.passphrase.decrypt(data, passphrase))
        except pyrage.DecryptError as e:
            raise AgeError(f"{where}: wrong passphrase (or not an identity file)") from e
    text = data.decode("utf-8", errors="replace")
    if "PRIVATE KEY-----" in text:
        return [_ssh_identity(data, where, ask)]
    identities = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(AGE_SECRET_PREFIX):
            raise AgeError(f"{where}:{number}: not an age identity (expected {AGE_SECRET_PREFIX}…)")
        try:
            native = pyrage.x25519.Identity.from_str(line)
        except pyrage.IdentityError as e:
            raise AgeError(f"{where}:{number}: corrupt age identity ({e})") from e
        public = str(native.to_public())
        identities.append(Identity(native, public, public))
    if not identities:
        raise AgeError(f"{where}: holds no age identity")
    return identities


def load_identities(data: bytes, source: str, ask: Ask = ask_on_terminal) -> list[Any]:
    """pyrage's identities of an identity file or SSH private key, for pyrage.decrypt."""
    return [identity.native for identity in parse_identity_file(data, source, ask)]


def recipients_fingerprint(recipients: list[Recipient]) -> str:
    """Names the recipient set a file was encrypted to; order and comments do not matter."""
    joined = "\n".join(sorted({r.canonical for r in recipients}))
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()[:32]


def encrypt(data: bytes, recipients: list[Recipient]) -> bytes:
    try:
        return bytes(pyrage.encrypt(data, [r.native for r in recipients]))
    except pyrage.EncryptError as e:
        raise ToolError(f"age encryption failed: {e}") from e


class DecryptFailure(ToolError):
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
