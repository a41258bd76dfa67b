"""Generated passphrases: words of the EFF long word list (via xkcdpass), drawn by SystemRandom."""

from __future__ import annotations

import functools
import math

WORDS = 7
MIN_WORD_LENGTH = 3
MAX_WORD_LENGTH = 9
SEPARATOR = "-"


@functools.cache
def _wordlist() -> list[str]:
    from xkcdpass import xkcd_password

    words: list[str] = xkcd_password.generate_wordlist(
        wordfile="eff-long", min_length=MIN_WORD_LENGTH, max_length=MAX_WORD_LENGTH
    )
    # The EFF list has a few words like "felt-tip" and "t-shirt": they would
    # read as two words between our separators, so only letters are kept.
    return sorted(word for word in words if word.isalpha() and word.isascii())


def entropy_bits() -> float:
    """Entropy of one generated passphrase, for the docs and the tests."""
    return WORDS * math.log2(len(_wordlist()))


def generate_passphrase() -> str:
    from xkcdpass import xkcd_password

    # xkcdpass draws each word with random.SystemRandom (the OS's CSPRNG).
    result: str = xkcd_password.generate_xkcdpassword(
        _wordlist(), numwords=WORDS, delimiter=SEPARATOR, case="lower"
    )
    return result
