"""odbox_common.age_stream, the age encryption odbox-backup seals its packs and chunks with:
every file it writes is read back by the real `age` and by pyrage, two implementations
that share none of its code, at the sizes where the STREAM's chunking has edges."""

from __future__ import annotations

import mmap
import os
import subprocess
from pathlib import Path

import pyrage
import pytest

from odbox_common.age_stream import CHUNK, MAGIC, Encryptor, x25519_public_key
from tests.helpers import age_key

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7, 8 << 20]


def age_decrypt(key: Path, blob: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["age", "-d", "-i", str(key)], input=blob, capture_output=True)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("keys")
    return [age_key(folder, "one.key"), age_key(folder, "two.key")]


@pytest.mark.parametrize("size", SIZES)
def test_what_it_encrypts_the_real_age_and_pyrage_decrypt_with_every_recipients_key(keys, size):
    data = os.urandom(size)
    encryptor = Encryptor([x25519_public_key(public) for _, public in keys])
    blob = encryptor.encrypt(data)
    assert blob.startswith(MAGIC) and len(blob) == encryptor.size_of(size)
    for key, _ in keys:
        done = age_decrypt(key, blob)
        assert done.returncode == 0, done.stderr
        assert done.stdout == data
        identity = pyrage.x25519.Identity.from_str(
            next(line for line in key.read_text().splitlines() if line.startswith("AGE-SECRET"))
        )
        assert pyrage.decrypt(bytes(blob), [identity]) == data


def test_another_key_cannot_decrypt(keys, tmp_path):
    stranger, _ = age_key(tmp_path, "stranger.key")
    blob = Encryptor([x25519_public_key(keys[0][1])]).encrypt(b"the payroll")
    done = age_decrypt(stranger, blob)
    assert done.returncode != 0
    assert b"no identity matched" in done.stderr.lower()


@pytest.mark.parametrize("cut", ["last chunk", "last byte", "a chunk in the middle"])
def test_a_truncated_or_spliced_file_is_refused_by_age(keys, cut):
    """The last chunk carries the last-chunk flag, and each chunk its counter: a file cut at a
    chunk's end, or with a chunk left out, does not decrypt (age's STREAM guarantee, which
    holds only when the writer sets them right)."""
    key, public = keys[0]
    data = os.urandom(3 * CHUNK)
    blob = Encryptor([x25519_public_key(public)]).encrypt(data)
    sealed = CHUNK + 16
    if cut == "last chunk":
        broken = blob[:-sealed]
    elif cut == "last byte":
        broken = blob[:-1]
    else:
        end = len(blob) - sealed
        broken = blob[: end - sealed] + blob[end:]
    assert age_decrypt(key, blob).returncode == 0
    done = age_decrypt(key, broken)
    assert done.returncode != 0
    assert done.stdout != data


def test_every_file_has_its_own_file_key_shares_and_nonce(keys):
    encryptor = Encryptor([x25519_public_key(keys[0][1])])
    first = bytes(encryptor.encrypt(b"same content"))
    second = bytes(encryptor.encrypt(b"same content"))
    assert first != second
    # No line of the header (the ephemeral share, the wrapped key, the MAC) is repeated.
    assert not set(first.split(b"\n")[1:4]) & set(second.split(b"\n")[1:4])


def test_the_recipient_decodes_to_the_key_pyrage_reads(keys):
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    raw = x25519_public_key(public)
    assert len(raw) == 32
    blob = Encryptor([raw]).encrypt(b"x")
    assert pyrage.decrypt(bytes(blob), [identity]) == b"x"
    assert x25519_public_key(public.upper()) == raw  # Bech32 is read in either case


@pytest.mark.parametrize(
    "text",
    ["age1", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "agf1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq", "hello"],
)
def test_what_is_not_an_age_recipient_is_refused(text):
    with pytest.raises(ValueError, match="age1"):
        x25519_public_key(text)


def test_a_recipient_with_one_letter_changed_is_refused_by_its_checksum():
    public = str(pyrage.x25519.Identity.generate().to_public())
    at = len(public) // 2
    changed = public[:at] + ("q" if public[at] != "q" else "p") + public[at + 1 :]
    with pytest.raises(ValueError, match="checksum"):
        x25519_public_key(changed)


def test_no_recipient_is_refused():
    with pytest.raises(ValueError, match="at least one recipient"):
        Encryptor([])


def test_encrypt_into_a_used_buffer_writes_a_whole_file_at_its_start(keys):
    """The seal buffers odbox-backup uses again (anonymous maps): one that held a longer
    file is read by age as the file just written, nothing of the last; one too short for
    the file is refused, not overrun."""
    key, public = keys[0]
    encryptor = Encryptor([x25519_public_key(public)])
    buffer = mmap.mmap(-1, 5 * CHUNK)
    buffer.write(b"\xaa" * len(buffer))
    for size in (4 * CHUNK, 7, 2 * CHUNK + 5):
        data = os.urandom(size)
        view = encryptor.encrypt_into(data, buffer)
        assert len(view) == len(encryptor.encrypt(data)) == encryptor.size_of(size)
        done = age_decrypt(key, view.tobytes())
        assert done.returncode == 0, done.stderr
        assert done.stdout == data
        view.release()
    with pytest.raises(ValueError, match="cannot hold"):
        encryptor.encrypt_into(os.urandom(5 * CHUNK), buffer)
