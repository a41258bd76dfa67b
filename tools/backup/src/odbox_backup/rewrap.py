"""An age file's header swapped for one to other recipients, its payload kept byte for byte.

age (https://age-encryption.org/v1) encrypts a file's payload under a random 16-byte file
key and wraps that key once per recipient in the header (one stanza each), which ends with
an HMAC over the header under a key derived from the file key. So whoever holds an identity
can unwrap the file key, write stanzas for other recipients and a new MAC, and keep the
payload: the file then decrypts with the new recipients' identities and no longer with a
removed one's (`age -d` reads it, as the tests check).

pyrage (age's Rust implementation, which odbox_common.age uses for everything else) has no
call that gives or takes a file key, so the stanzas are made here with `cryptography`
(X25519, ChaCha20-Poly1305, HKDF, RSA-OAEP), following the spec's recipient types:
X25519 (`age1…`), ssh-ed25519 and ssh-rsa, the ones a repository may name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

from odbox_common.age import AGE_SECRET_PREFIX, AgeError, parse_identity_file

VERSION_LINE = b"age-encryption.org/v1\n"
X25519_LABEL = b"age-encryption.org/v1/X25519"
ED25519_LABEL = b"age-encryption.org/v1/ssh-ed25519"
RSA_LABEL = b"age-encryption.org/v1/ssh-rsa"
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
P = 2**255 - 19  # the field of Curve25519 and edwards25519


class NotWrapped(Exception):
    """No stanza of the header opens with the identities given (or the header is damaged)."""


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), 32, salt, info).derive(ikm)


def _seal_key(key: bytes, file_key: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    return ChaCha20Poly1305(key).encrypt(bytes(12), file_key, None)


def _open_key(key: bytes, body: bytes) -> bytes | None:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    try:
        return ChaCha20Poly1305(key).decrypt(bytes(12), body, None)
    except InvalidTag:
        return None


def _x25519(scalar: bytes, point: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    return X25519PrivateKey.from_private_bytes(scalar).exchange(
        X25519PublicKey.from_public_bytes(point)
    )


def _x25519_public(scalar: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(scalar).public_key().public_bytes_raw()


def bech32_data(text: str) -> bytes:
    """The bytes of a bech32 string (age1…, AGE-SECRET-KEY-1…), checksum dropped: odbox_common
    has parsed it with pyrage first, which checks it."""
    data = text.lower().rsplit("1", 1)[1][:-6]
    bits, value, out = 0, 0, bytearray()
    for char in data:
        value = (value << 5) | BECH32.index(char)
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((value >> bits) & 0xFF)
    return bytes(out)


def _ssh_wire(text: str) -> bytes:
    return base64.b64decode(text.split()[1])


def _ed25519_to_x25519(public: bytes) -> bytes:
    """An Ed25519 public key as the X25519 one of the same secret (u = (1+y)/(1-y)), as age's
    ssh-ed25519 recipient takes it."""
    y = int.from_bytes(public, "little") & ((1 << 255) - 1)
    u = (1 + y) * pow(1 - y, P - 2, P) % P
    return u.to_bytes(32, "little")


# ------------------------------------------------------------ stanzas for recipients


def _stanza(kind: bytes, args: list[bytes], body: bytes) -> bytes:
    text = _b64(body)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    if not lines or len(lines[-1]) == 64:
        lines.append(b"")  # the body's last line is shorter than 64 columns, maybe empty
    return b"-> " + b" ".join([kind, *args]) + b"\n" + b"\n".join(lines) + b"\n"


def wrap_for(recipient: str, file_key: bytes) -> bytes:
    """One stanza that gives `file_key` to `recipient` (age1…, ssh-ed25519 …, ssh-rsa …)."""
    ephemeral = os.urandom(32)
    if recipient.startswith("age1"):
        public = bech32_data(recipient)
        share = _x25519_public(ephemeral)
        key = _hkdf(_x25519(ephemeral, public), share + public, X25519_LABEL)
        return _stanza(b"X25519", [_b64(share)], _seal_key(key, file_key))
    wire = _ssh_wire(recipient)
    tag = _b64(hashlib.sha256(wire).digest()[:4])
    if recipient.startswith("ssh-ed25519 "):
        public = _ed25519_to_x25519(wire[-32:])
        share = _x25519_public(ephemeral)
        tweak = _hkdf(b"", wire, ED25519_LABEL)
        shared = _x25519(tweak, _x25519(ephemeral, public))
        key = _hkdf(shared, share + public, ED25519_LABEL)
        return _stanza(b"ssh-ed25519", [tag, _b64(share)], _seal_key(key, file_key))
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    rsa_key = serialization.load_ssh_public_key(recipient.encode())
    assert isinstance(rsa_key, rsa.RSAPublicKey)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), RSA_LABEL)
    return _stanza(b"ssh-rsa", [tag], rsa_key.encrypt(file_key, oaep))


# ------------------------------------------------------------ identities that unwrap


@dataclass(frozen=True)
class Unwrapper:
    """One identity's secret, as the stanzas of its type need it."""

    kind: bytes  # the stanza type it opens
    secret: Any  # X25519/Ed25519 scalar (bytes) or an RSA private key
    public: bytes  # X25519 public key (for the HKDF salt), or the SSH wire key
    recipient: str  # its public key as a repository names it (age1…, "ssh-ed25519 AAAA…")
    tag: bytes = b""  # ssh-*: the stanza's key tag

    def unwrap(self, args: list[bytes], body: bytes) -> bytes | None:
        if self.kind == b"X25519" and len(args) == 1:
            share = _unb64(args[0])
            key = _hkdf(_x25519(self.secret, share), share + self.public, X25519_LABEL)
            return _open_key(key, body)
        if not args or args[0] != self.tag:
            return None
        if self.kind == b"ssh-ed25519" and len(args) == 2:
            share = _unb64(args[1])
            wire = self.public
            own = _x25519_public(self.secret)
            shared = _x25519(_hkdf(b"", wire, ED25519_LABEL), _x25519(self.secret, share))
            return _open_key(_hkdf(shared, share + own, ED25519_LABEL), body)
        if self.kind == b"ssh-rsa":
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding

            oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), RSA_LABEL)
            try:
                return bytes(self.secret.decrypt(body, oaep))
            except ValueError:
                return None
        return None


def unwrappers(data: bytes, where: str) -> list[Unwrapper]:
    """The identities of an identity file (age-keygen's, `age -p`-wrapped, or an unencrypted
    OpenSSH ed25519 or RSA key) as `Unwrapper`s."""
    text = data.decode("utf-8", errors="replace")
    if "PRIVATE KEY-----" not in text:
        return [_age_unwrapper(str(i.native), str(i.public))
                for i in parse_identity_file(data, where)]  # fmt: skip
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        key = serialization.load_ssh_private_key(data, None)
    except TypeError:
        raise AgeError(
            f"{where} is passphrase-protected: rekey reads an unencrypted copy only "
            "(`ssh-keygen -p -N '' -f COPY`, on a disk that is yours, deleted afterwards)"
        ) from None
    except ValueError as e:
        raise AgeError(f"{where}: not a usable SSH private key ({e})") from e
    wire = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    raw = base64.b64decode(wire.split()[1])
    tag = _b64(hashlib.sha256(raw).digest()[:4])
    public = " ".join(wire.decode().split()[:2])
    if isinstance(key, ed25519.Ed25519PrivateKey):
        scalar = hashlib.sha512(key.private_bytes_raw()).digest()[:32]
        return [Unwrapper(b"ssh-ed25519", scalar, raw, public, tag)]
    if isinstance(key, rsa.RSAPrivateKey):
        return [Unwrapper(b"ssh-rsa", key, raw, public, tag)]
    raise AgeError(f"{where}: only ed25519 and RSA SSH keys are age recipients")


def _age_unwrapper(secret: str, public: str) -> Unwrapper:
    assert secret.startswith(AGE_SECRET_PREFIX)
    scalar = bech32_data(secret)
    return Unwrapper(b"X25519", scalar, _x25519_public(scalar), public)


# ------------------------------------------------------------ the header


@dataclass(frozen=True)
class Header:
    stanzas: list[tuple[list[bytes], bytes]]  # (type and arguments, body) each
    mac_input: bytes  # the header up to and including "---"
    mac: bytes
    end: int  # where the payload (nonce, then STREAM chunks) starts


def parse_header(blob: bytes | memoryview) -> Header:
    view = memoryview(blob)
    if bytes(view[: len(VERSION_LINE)]) != VERSION_LINE:
        raise NotWrapped("not an age file")
    pos = len(VERSION_LINE)
    stanzas: list[tuple[list[bytes], bytes]] = []

    def line() -> bytes:
        nonlocal pos
        end = bytes(view[pos : pos + 4096]).find(b"\n")
        if end < 0:
            raise NotWrapped("a header line without its end")
        text = bytes(view[pos : pos + end])
        pos += end + 1
        return text

    while True:
        start = pos
        text = line()
        if text.startswith(b"--- "):
            return Header(stanzas, bytes(view[:start]) + b"---", _unb64(text[4:]), pos)
        if not text.startswith(b"-> "):
            raise NotWrapped("a damaged header")
        args = text[3:].split(b" ")
        body = b""
        while True:
            piece = line()
            body += piece
            if len(piece) < 64:
                break
        stanzas.append((args, _unb64(body)))


def file_key(header: Header, identities: list[Unwrapper]) -> bytes:
    """The file key, from the first stanza an identity opens whose key makes the header's MAC."""
    for args, body in header.stanzas:
        for identity in identities:
            if args[0] != identity.kind:
                continue
            key = identity.unwrap(args[1:], body)
            if key is not None and hmac.compare_digest(_header_mac(key, header.mac_input),
                                                       header.mac):  # fmt: skip
                return key
    raise NotWrapped("encrypted to none of the identities given")


def _header_mac(key: bytes, mac_input: bytes) -> bytes:
    return hmac.new(_hkdf(key, b"", b"header"), mac_input, hashlib.sha256).digest()


def rewrap(blob: bytes | memoryview, identities: list[Unwrapper], recipients: list[str]) -> bytes:
    """`blob` (an age file) with a header for `recipients` and its payload unchanged."""
    header = parse_header(blob)
    key = file_key(header, identities)
    mac_input = VERSION_LINE + b"".join(wrap_for(r, key) for r in recipients) + b"---"
    new_header = mac_input + b" " + _b64(_header_mac(key, mac_input)) + b"\n"
    return b"".join([new_header, memoryview(blob)[header.end :]])  # one copy of the payload
