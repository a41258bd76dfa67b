"""The codec of a repository (FORMAT.md, "Objects" and "Authentication"): what a stored
file's bytes are made of. Content is `zstd(content)`, then age-encrypted to the
repository's recipients when it has any; configs, manifests and indexes carry an
HMAC-SHA256 under the repository key. Restic's `internal/crypto` is the model: this
module knows bytes and keys, never where a file goes (packs.py, manifests.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import mmap
import os
import re
import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zstandard

from odbox_common.age import parse_recipients
from odbox_common.errors import ToolError, UsageError

if TYPE_CHECKING:
    from odbox_common.age_stream import Encryptor

AGE_MAGIC = b"age-encryption.org/v1\n"
ZSTD_LEVEL = 3
AUTH_KEY_ENV = "ODBOX_BACKUP_AUTH_KEY_FILE"
AUTH_KEY_LINE = re.compile(r"odbox-backup-auth-key-1:([0-9a-f]{64})")
AUTH_HEADER = b"odbox-auth-v1 "  # the first line of an authenticated file: this, the MAC, \n
SEAL_BUFFERS = 3  # kept for `Codec.sealed`: the dump's two workers and the filestore's reader


class RepositoryError(ToolError):
    """The repository is missing, of another version, or damaged."""


class NoRepository(RepositoryError, UsageError):
    """Nothing at the place given: the command line's to fix (exit 2, as in every tool)."""


class CorruptObject(RepositoryError):
    """An object's bytes do not decode to content with its name's hash."""


class Unauthenticated(CorruptObject):
    """A manifest or index whose MAC does not match: forged, or damaged."""


class AuthKey:
    """The repository key (FORMAT.md, "Authentication"): 32 random bytes that the box and
    the admin hold and the repository does not. Every config, manifest and index carries
    an HMAC-SHA256 under a key derived from it and the repository's ID, so whoever can
    write to the bucket but lacks it cannot make a file odbox-backup accepts.

    A MAC, not a signature: the box must check what it reads as well as sign what it writes
    (a planted index must not stop it storing a file), so it holds the secret either way,
    and an HMAC costs microseconds where the files are hashed anyway."""

    def __init__(self, secret: bytes, source: str) -> None:
        self.secret, self.source = secret, source

    @classmethod
    def generate(cls, source: str) -> AuthKey:
        return cls(secrets.token_bytes(32), source)

    def text(self) -> str:
        return (
            "# odbox-backup authentication key: keep a copy with the admin's identity (the\n"
            "# vault), never in the repository; every command that reads or writes needs it.\n"
            f"odbox-backup-auth-key-1:{self.secret.hex()}\n"
        )

    @classmethod
    def parse(cls, text: str, source: str) -> AuthKey:
        keys = [m[1] for line in text.splitlines() if (m := AUTH_KEY_LINE.fullmatch(line.strip()))]
        if len(keys) != 1:
            raise UsageError(
                f"{source} is not an odbox-backup authentication key (one line "
                "odbox-backup-auth-key-1:<64 hex digits>, as `odbox-backup init` writes)"
            )
        return cls(bytes.fromhex(keys[0]), source)

    @classmethod
    def load(cls, path: Path) -> AuthKey:
        try:
            return cls.parse(path.read_text(), str(path))
        except OSError as e:
            raise UsageError(f"cannot read the authentication key {path}: {e.strerror}") from e

    @classmethod
    def from_env(cls) -> AuthKey | None:
        """The key named by ODBOX_BACKUP_AUTH_KEY_FILE (the box's configuration), if set."""
        path = os.environ.get(AUTH_KEY_ENV)
        return cls.load(Path(path)) if path else None

    def for_repository(self, repository_id: str) -> Authenticator:
        derived = hmac.new(self.secret, b"odbox-backup repository " + repository_id.encode(),
                           hashlib.sha256).digest()  # fmt: skip
        return Authenticator(derived)


class Authenticator:
    """MACs under one repository's key: `kind\0name\0body`, so a file is authentic only
    as what it was written as (a manifest under its own ID, an index under its own)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def mac(self, kind: str, name: str, body: bytes | bytearray | memoryview) -> str:
        h = hmac.new(self._key, f"{kind}\0{name}\0".encode(), hashlib.sha256)
        h.update(body)
        return h.hexdigest()

    def wrap(self, kind: str, name: str, body: bytes | bytearray) -> bytes:
        """`body` behind its MAC line (so `tail -n +2 FILE` is the body)."""
        return AUTH_HEADER + self.mac(kind, name, body).encode() + b"\n" + body

    def unwrap(self, kind: str, name: str, data: bytes, what: str) -> memoryview:
        """The body of a file `wrap` made; Unauthenticated if it was not made so."""
        end = len(AUTH_HEADER) + 64
        view = memoryview(data)
        if not data.startswith(AUTH_HEADER) or data[end : end + 1] != b"\n":
            raise Unauthenticated(f"{what} is not authenticated (no MAC line): forged or damaged")
        body = view[end + 1 :]
        if not hmac.compare_digest(
            data[len(AUTH_HEADER) : end], self.mac(kind, name, body).encode()
        ):
            raise Unauthenticated(
                f"{what} is not authenticated (its MAC does not match): forged or damaged"
            )
        return body


class Codec:
    """zstd and age for one repository: its recipients (to seal) and the identities given
    (to unseal). One zstd context per thread: they are not safe to share between threads."""

    def __init__(self, recipients: Sequence[str], identities: list[Any], level: int) -> None:
        self.identities = identities  # the repository's own list: the same object
        self.level = level
        self._recipients = parse_recipients(recipients)
        self._local = threading.local()
        # age1… recipients (the box's): sealed by age_stream, which releases the GIL and is
        # about three times pyrage's speed; SSH recipients by pyrage (age_stream's docstring).
        self._fast: Encryptor | None = None
        self._buffers: list[mmap.mmap] = []  # `sealed`'s, free; under _buffers_lock
        self._buffers_lock = threading.Lock()
        texts = [text.strip() for text in recipients]
        if texts and all(text.startswith("age1") for text in texts):
            from odbox_common.age_stream import Encryptor, x25519_public_key

            self._fast = Encryptor([x25519_public_key(text) for text in texts])

    def encode(self, content: bytes) -> bytes | bytearray:
        return self.seal(self.compress(content))

    def compress(self, content: bytes) -> bytes:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstandard.ZstdCompressor(level=self.level)
        return bytes(compressor.compress(content))

    def encode_pieces(self, pieces: Iterable[str]) -> bytes | bytearray:
        """`encode` of the text `pieces` make, without the whole text in memory: it is
        compressed as it is made (a manifest names an object per filestore file: tens of MB
        of JSON at 200,000; `manifests.json_pieces` makes its pieces)."""
        compressed = io.BytesIO()  # one buffer, not a list of parts and their join
        compressor = zstandard.ZstdCompressor(level=self.level)
        writer = compressor.compressobj()
        pending: list[str] = []
        size = 0
        for piece in pieces:
            pending.append(piece)
            size += len(piece)
            if size >= 1 << 20:
                compressed.write(writer.compress("".join(pending).encode()))
                pending, size = [], 0
        compressed.write(writer.compress("".join(pending).encode()))
        compressed.write(writer.flush())
        frame = compressed.getvalue()  # the buffer itself, not a copy, once it is the only one
        del compressed
        return self.seal(frame)

    def seal(self, frame: bytes) -> bytes | bytearray:
        """`frame` encrypted to the recipients. Through pyrage (SSH recipients),
        `pyrage.encrypt_io` into a buffer, not `pyrage.encrypt`: that holds the output twice
        (Rust's, then Python's copy), which for an 8 MiB pack or a 12 MB manifest set the
        peak memory of a run."""
        if not self._recipients:
            return frame
        if self._fast is not None:
            return self._fast.encrypt(frame)
        import pyrage

        sealed = io.BytesIO()
        pyrage.encrypt_io(io.BytesIO(frame), sealed, self._recipients)
        return sealed.getvalue()

    @contextlib.contextmanager
    def sealed(self, frame: bytes) -> Iterator[bytes | bytearray | memoryview]:
        """`seal(frame)` for a caller that writes it and lets it go: sealed by age_stream
        into a buffer used again (up to SEAL_BUFFERS of them are kept), so a full backup
        does not fault in a fresh page for every 4 KiB it encrypts (320,000 faults at the
        bench's size, 7 % of its time). The view is released on leaving: one kept by mistake
        fails when used, never shows another file's bytes; a buffer something else still
        holds a view of is not used again.

        The buffers are anonymous maps, not bytearrays: freed by `drop_buffers`, they go back
        to the kernel at once, where malloc's arenas of the threads that grew them would keep
        them (an encrypted run's peak at 200,000 files was 15 MB above the unencrypted)."""
        if self._fast is None:
            yield self.seal(frame)
            return
        size = self._fast.size_of(len(frame))
        with self._buffers_lock:  # the smallest that fits, else the largest, to grow
            fits = [b for b in self._buffers if len(b) >= size]
            buffer = fits[0] if fits else self._buffers[-1] if self._buffers else None
            if buffer is not None:
                self._buffers.remove(buffer)
        if buffer is None:
            # private: a shared anonymous map cannot grow (SIGBUS past its first size)
            buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        elif len(buffer) < size:
            buffer.resize(size)
        view = self._fast.encrypt_into(frame, buffer)
        try:
            yield view
        finally:
            view.release()
            try:
                buffer.resize(len(buffer))  # BufferError while a view of it is held elsewhere
            except BufferError:
                pass  # unmapped when the last view of it goes
            else:
                with self._buffers_lock:
                    if len(self._buffers) < SEAL_BUFFERS:
                        self._buffers.append(buffer)
                        self._buffers.sort(key=len)
                    else:
                        buffer.close()

    def drop_buffers(self) -> None:
        """Unmap `sealed`'s buffers (up to SEAL_BUFFERS packs' size): after the last object
        of a run, before its manifest is made, which is when a run's memory peaks."""
        with self._buffers_lock:
            for buffer in self._buffers:
                buffer.close()
            self._buffers.clear()

    def decode(self, blob: bytes, what: str) -> bytes:
        return self.decompress(self.unseal(blob, what), what)

    def unseal(self, blob: bytes, what: str) -> bytes:
        if blob.startswith(AGE_MAGIC):
            if not self.identities:
                raise RepositoryError(
                    f"{what} is encrypted: pass --identity with a key of one of the "
                    "repository's recipients"
                )
            import pyrage

            plain = io.BytesIO()  # `decrypt_io`, as `seal` uses `encrypt_io`: one copy out
            try:
                pyrage.decrypt_io(io.BytesIO(blob), plain, self.identities)
                blob = plain.getvalue()
            except Exception as e:  # DecryptError; OSError for a damaged stream
                raise RepositoryError(
                    f"cannot decrypt {what}: the identity is not one of the repository's "
                    f"recipients, or the file is damaged ({e})"
                ) from e
        elif self._recipients:
            raise CorruptObject(f"{what} should be encrypted but is not: the repository is damaged")
        return blob

    def decompress(self, blob: bytes | memoryview, what: str) -> bytes:
        try:
            decompressor = getattr(self._local, "decompressor", None)
            if decompressor is None:
                decompressor = self._local.decompressor = zstandard.ZstdDecompressor()
            if zstandard.frame_content_size(blob) < 0:  # written as a stream (a manifest)
                return bytes(decompressor.decompressobj().decompress(blob))
            return bytes(decompressor.decompress(blob))
        except zstandard.ZstdError as e:
            raise CorruptObject(f"{what} is damaged: {e}") from e
