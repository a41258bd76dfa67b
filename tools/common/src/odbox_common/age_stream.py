"""age encryption to X25519 recipients (`age1…`), written with cryptography's primitives.

Why not pyrage here, as everywhere else: odbox-backup seals every pack and chunk it
stores, a gigabyte and more per full backup, and pyrage's `encrypt_io` holds the GIL while
it runs at about 0.9 GiB/s, so the threads that cut, hash and compress the next chunks
wait for it (`bench/age_speed.py`); its `encrypt` releases the GIL but holds the output
twice, which set the peak memory of a run. OpenSSL's ChaCha20-Poly1305, through cryptography,
runs at about 3 GiB/s and releases the GIL. What is ours is only the format around those
primitives, as the age specification (age-encryption.org/v1, C2SP) writes it:

- a random 16-byte file key;
- per recipient an `X25519` stanza: an ephemeral X25519 share, and the file key sealed
  with ChaCha20-Poly1305 under HKDF-SHA-256(shared secret, share || recipient,
  "age-encryption.org/v1/X25519"), nonce zero;
- the header's MAC: HMAC-SHA-256 under HKDF-SHA-256(file key, "", "header");
- a random 16-byte nonce, then the STREAM payload: 64 KiB chunks sealed with
  ChaCha20-Poly1305 under HKDF-SHA-256(file key, nonce, "payload"), the chunk nonce an
  11-byte big-endian counter and a last-chunk flag.

Only encryption, and only to X25519 recipients: decryption stays pyrage's, so every
file written here is read back by an independent implementation (and the tests decrypt
with the real `age` too). SSH recipients (`ssh-ed25519`, `ssh-rsa`) go through pyrage.
"""

from __future__ import annotations

import base64
import hmac
import mmap
import os
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"age-encryption.org/v1\n"
CHUNK = 64 * 1024  # the STREAM's plaintext chunk
TAG = 16  # Poly1305's tag, after every sealed chunk
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def x25519_public_key(recipient: str) -> bytes:
    """The 32 bytes an `age1…` recipient (Bech32, BIP 173) encodes."""
    text = recipient.strip().lower()
    hrp, sep, data = text.rpartition("1")
    if hrp != "age" or not sep or len(data) < 6 or any(c not in _BECH32 for c in data):
        raise ValueError("not an age1… X25519 recipient")
    values = [_BECH32.index(c) for c in data]
    if _bech32_polymod([ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + values) != 1:
        raise ValueError("an age1… recipient with a wrong checksum")
    bits = acc = 0
    out = bytearray()
    for value in values[:-6]:  # five bits each, into bytes; the last six are the checksum
        acc = (acc << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if len(out) != 32 or acc & ((1 << bits) - 1):
        raise ValueError("an age1… recipient that is not a 32-byte key")
    return bytes(out)


def _bech32_polymod(values: Sequence[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            if (top >> i) & 1:
                checksum ^= generator[i]
    return checksum


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")  # age's base64: standard alphabet, no padding


class Encryptor:
    """Encrypts to a fixed set of X25519 recipients; safe to share between threads (every
    file gets its own file key, shares and nonce, from os.urandom)."""

    def __init__(self, public_keys: Sequence[bytes]) -> None:
        if not public_keys:
            raise ValueError("age encryption needs at least one recipient")
        self._keys = [(key, X25519PublicKey.from_public_bytes(key)) for key in public_keys]
        # The header's size does not vary (fixed-length stanzas and MAC), nor the nonce's.
        self._head_size = len(self._header(bytes(16))) + 16

    def _header(self, file_key: bytes) -> bytes:
        lines = [MAGIC]
        for raw, public in self._keys:
            ephemeral = X25519PrivateKey.generate()
            share = ephemeral.public_key().public_bytes_raw()
            shared = ephemeral.exchange(public)  # raises on a low-order (all-zero) result
            wrap_key = _hkdf(shared, share + raw, b"age-encryption.org/v1/X25519")
            body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
            lines.append(b"-> X25519 " + _b64(share) + b"\n" + _b64(body) + b"\n")
        lines.append(b"---")
        header = b"".join(lines)
        mac = hmac.digest(_hkdf(file_key, b"", b"header"), header, "sha256")
        return header + b" " + _b64(mac) + b"\n"

    def encrypt(self, plaintext: bytes | bytearray | memoryview) -> bytearray:
        """`plaintext` as an age file. The chunks are sealed into one buffer by OpenSSL,
        with the GIL released: other threads go on meanwhile. That buffer is what is
        returned, not a copy as bytes: a copy would be a second buffer of the file's size,
        which at 200,000 files set the peak memory of a run (201 MB against 171)."""
        file = _File(self, plaintext)
        out = bytearray(file.size)
        file.seal_into(out)
        return out

    def size_of(self, length: int) -> int:
        """The size of the file `length` bytes encrypt to: header, payload nonce, the bytes,
        and a tag a chunk (an empty file is one empty last chunk)."""
        return self._head_size + length + max(1, -(-length // CHUNK)) * TAG

    def encrypt_into(
        self, plaintext: bytes | bytearray | memoryview, into: bytearray | mmap.mmap
    ) -> memoryview:
        """`encrypt`, written at the start of `into` (at least `size_of` bytes, and nothing
        else writing it meanwhile); a view of the written part. A buffer used again costs no
        page faults, where a new one of a MiB costs 256: a quarter of a million in a full
        backup at the bench's size, and 7 % of its time."""
        file = _File(self, plaintext)
        if len(into) < file.size:
            raise ValueError(f"{len(into)} bytes cannot hold an age file of {file.size}")
        file.seal_into(into)
        return memoryview(into)[: file.size]


class _File:
    """One age file being written: its own file key, header, payload key and size."""

    def __init__(self, encryptor: Encryptor, plaintext: bytes | bytearray | memoryview) -> None:
        file_key = os.urandom(16)
        nonce = os.urandom(16)
        self.head = encryptor._header(file_key) + nonce
        self.aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self.data = memoryview(plaintext).cast("B")
        self.chunks = max(1, -(-len(self.data) // CHUNK))
        self.size = encryptor.size_of(len(self.data))
        assert len(self.head) + len(self.data) + self.chunks * TAG == self.size

    def seal_into(self, out: bytearray | mmap.mmap) -> None:
        """The whole file at the start of `out`, which holds at least `size` bytes."""
        head, data, chunks = self.head, self.data, self.chunks
        out[: len(head)] = head
        with memoryview(out) as view:  # released after: `out` can be resized and freed
            at = len(head)
            for counter in range(chunks):
                piece = data[counter * CHUNK : (counter + 1) * CHUNK]
                chunk_nonce = counter.to_bytes(11, "big") + (
                    b"\x01" if counter == chunks - 1 else b"\x00"
                )
                at += self.aead.encrypt_into(
                    chunk_nonce, piece, None, view[at : at + len(piece) + TAG]
                )
        assert at == self.size
