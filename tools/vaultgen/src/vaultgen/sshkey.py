"""The vault's convenience SSH identity: Ed25519 in OpenSSH format."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from odbox_common.errors import ToolError as VaultError

COMMENT = "odoo-box-vault"


def new_private_key() -> bytes:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def public_key_line(private_key: bytes) -> bytes:
    """`ssh-ed25519 AAAA… odoo-box-vault`: what `ssh-keygen -y` prints, plus a comment."""
    try:
        key = serialization.load_ssh_private_key(private_key, password=None)
    except (ValueError, TypeError) as e:
        raise VaultError("ssh/id_ed25519 is not an unencrypted OpenSSH private key") from e
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public + b" " + COMMENT.encode() + b"\n"
