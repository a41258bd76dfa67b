"""odbox_backup.codec's seal buffers (`Codec.sealed`): the buffers a run encrypts its
objects and packs into are used again, so a view of one kept past its write must never show
another file's bytes. Decrypted by pyrage, which shares no code with age_stream."""

from __future__ import annotations

import os

import pyrage
import pytest

from odbox_backup.codec import SEAL_BUFFERS, Codec
from tests.helpers import age_key


@pytest.fixture
def sealing(tmp_path):
    key, public = age_key(tmp_path, "box.key")
    secret = next(line for line in key.read_text().splitlines() if line.startswith("AGE-SECRET"))
    identity = pyrage.x25519.Identity.from_str(secret)
    return Codec([public], [], 3), lambda blob: pyrage.decrypt(bytes(blob), [identity])


def test_a_view_kept_past_its_write_fails_when_used_instead_of_showing_the_next_file(sealing):
    codec, _ = sealing
    with codec.sealed(os.urandom(100_000)) as blob:
        kept = blob
    with codec.sealed(os.urandom(100_000)), pytest.raises(ValueError, match="released"):
        bytes(kept)


def test_a_buffer_something_still_views_is_not_sealed_into_again(sealing):
    codec, decrypt = sealing
    first = os.urandom(200_000)
    with codec.sealed(first) as blob:
        held = memoryview(blob)  # a second view, as a store that kept the body would have
    for _ in range(SEAL_BUFFERS + 1):
        with codec.sealed(os.urandom(300_000)) as other:
            assert decrypt(other) != first
    assert decrypt(held) == first


def test_sealed_files_decrypt_to_their_frames_whatever_the_buffer_held_before(sealing):
    codec, decrypt = sealing
    for size in (3 << 20, 10, 1 << 20, 0, 5 << 20):
        frame = os.urandom(size)
        with codec.sealed(frame) as blob:
            assert decrypt(blob) == frame


def test_without_recipients_sealed_is_the_frame_itself(tmp_path):
    codec = Codec([], [], 3)
    frame = b"zstd frame"
    with codec.sealed(frame) as blob:
        assert blob is frame
