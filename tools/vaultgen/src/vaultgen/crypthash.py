"""Password hashes from the system's libxcrypt: `$6$` SHA-512-crypt and `$y$` yescrypt.

Why ctypes and not a library: the hash must be exactly what `chpasswd -e`, PAM
and NixOS's `hashedPassword` verify, i.e. libxcrypt's own `crypt_gensalt_rn` and
`crypt_rn`. Python's `crypt` module is gone in 3.13, passlib has no yescrypt,
and the PyPI yescrypt bindings ship their own reimplementation. Calling the
system library is the one way to be the same code that verifies the hash.
Set VAULTGEN_LIBCRYPT to a libcrypt path where it is not found on its own
(the Nix package does so).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hmac
import os
from typing import Literal

from odbox_common.errors import ToolError as VaultError

Method = Literal["sha512", "yescrypt"]
PREFIXES: dict[Method, bytes] = {"sha512": b"$6$", "yescrypt": b"$y$"}
CRYPT_DATA_SIZE = 32768  # sizeof(struct crypt_data) in libxcrypt
CRYPT_OUTPUT_SIZE = 384
MAX_PASSPHRASE_BYTES = 512  # CRYPT_MAX_PASSPHRASE_SIZE


@functools.cache
def _libcrypt() -> ctypes.CDLL:
    candidates = [
        os.environ.get("VAULTGEN_LIBCRYPT"),
        "libcrypt.so.1",
        ctypes.util.find_library("crypt"),
    ]
    for name in candidates:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, "crypt_gensalt_rn") and hasattr(lib, "crypt_rn"):
            lib.crypt_gensalt_rn.restype = ctypes.c_char_p
            lib.crypt_gensalt_rn.argtypes = [
                ctypes.c_char_p,
                ctypes.c_ulong,
                ctypes.c_char_p,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
            ]
            lib.crypt_rn.restype = ctypes.c_char_p
            lib.crypt_rn.argtypes = [
                ctypes.c_char_p,
                ctypes.c_char_p,
                ctypes.c_void_p,
                ctypes.c_int,
            ]
            return lib
    raise VaultError(
        "libxcrypt (libcrypt.so.1 with crypt_gensalt_rn) was not found: install libcrypt1 "
        "or set VAULTGEN_LIBCRYPT to its path"
    )


def _encode(password: str) -> bytes:
    raw = password.encode("utf-8")
    if b"\0" in raw:
        raise VaultError("a password cannot contain a NUL byte")
    if len(raw) >= MAX_PASSPHRASE_BYTES:
        raise VaultError(f"a password must be shorter than {MAX_PASSPHRASE_BYTES} bytes")
    return raw


def _crypt(raw: bytes, setting: bytes) -> bytes | None:
    data = ctypes.create_string_buffer(CRYPT_DATA_SIZE)
    result: bytes | None = _libcrypt().crypt_rn(raw, setting, data, CRYPT_DATA_SIZE)
    if not result or result.startswith(b"*"):
        return None
    return result


def hash_password(password: str, method: Method) -> str:
    """A new salted hash with libxcrypt's default cost for the method."""
    lib = _libcrypt()
    salt_source = os.urandom(32)
    setting_buf = ctypes.create_string_buffer(CRYPT_OUTPUT_SIZE)
    setting = lib.crypt_gensalt_rn(
        PREFIXES[method], 0, salt_source, len(salt_source), setting_buf, CRYPT_OUTPUT_SIZE
    )
    if not setting:
        raise VaultError(f"this libxcrypt cannot make {method} hashes")
    hashed = _crypt(_encode(password), setting)
    if hashed is None:
        raise VaultError(f"libxcrypt failed to hash a password with {method}")
    return hashed.decode("ascii")


def verify_password(password: str, hashed: str) -> bool:
    """True when `hashed` is a hash of `password` (constant-time comparison)."""
    try:
        raw = _encode(password)
        setting = hashed.encode("ascii")
    except (VaultError, UnicodeEncodeError):
        return False
    result = _crypt(raw, setting)
    return result is not None and hmac.compare_digest(result, setting)


def method_of(hashed: str) -> Method | None:
    for method, prefix in PREFIXES.items():
        if hashed.startswith(prefix.decode()):
            return method
    return None
