"""Re-encrypt every `.age` file to the current recipients, optionally under a new identity.

Works from a fresh clone that has only the `.age` files and `age.key`: it reads
the `.age` files, never the cleartext. With `--new-identity` the new key is
written to `age.key.new` first and renamed over `age.key` only after every
`.age` file has been re-encrypted and checked, so an interrupted rekey is
finished by running it again (it decrypts with either key).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vaultgen import agecrypt, layout
from vaultgen.errors import VaultError
from vaultgen.files import (
    PUBLIC_FILE_MODE,
    SECRET_FILE_MODE,
    Transaction,
    exclusive_lock,
    read_or_none,
    remove_stale_temp_files,
    sha256_hex,
    write_atomic,
)
from vaultgen.records import Manifest, State


@dataclass(frozen=True)
class RekeyResult:
    files: list[str]
    new_identity: str | None


def age_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*" + layout.AGE_SUFFIX) if not p.name.startswith("."))


def rekey(root: Path, new_identity: bool) -> RekeyResult:
    if not (root / layout.IDENTITY).exists():
        raise VaultError(
            f"{root / layout.IDENTITY} does not exist: rekey needs the current identity"
        )
    with exclusive_lock(root):
        remove_stale_temp_files(root)
        identities = agecrypt.load_identity_file(root / layout.IDENTITY)
        pending = read_or_none(root / layout.IDENTITY_NEW)
        if pending is not None:
            # An interrupted rekey: some files may already be under the new key.
            identities += agecrypt.parse_identity_file(pending, str(root / layout.IDENTITY_NEW))
            new_identity = True
        files = age_files(root)
        plain = {path: agecrypt.decrypt(path.read_bytes(), identities, str(path)) for path in files}
        if new_identity and pending is None:
            secret, public = agecrypt.generate_identity()
            pending = agecrypt.identity_file_text(secret, public)
            write_atomic(root / layout.IDENTITY_NEW, pending, SECRET_FILE_MODE)
        target_identity = (
            agecrypt.parse_identity_file(pending, layout.IDENTITY_NEW)
            if new_identity and pending is not None
            else identities[:1]
        )
        own = target_identity[0].recipient
        assert own is not None
        recipients = [
            agecrypt.parse_recipient(own, layout.IDENTITY),
            *agecrypt.parse_recipients_file(root / layout.RECIPIENTS),
        ]
        fingerprint = agecrypt.recipients_fingerprint(recipients)
        manifest = Manifest(identity=own)
        state = State.load(root / layout.STATE)
        with Transaction() as tx:
            for path, data in plain.items():
                encrypted = agecrypt.encrypt(data, recipients)
                if agecrypt.decrypt(encrypted, target_identity, str(path)) != data:
                    raise VaultError(
                        f"re-encrypting {path} did not round-trip; nothing was changed"
                    )
                tx.stage(path, encrypted, PUBLIC_FILE_MODE)
                rel = path.relative_to(root).as_posix()
                manifest.files[rel] = {"sha256": sha256_hex(encrypted), "recipients": fingerprint}
                clear = state.files.get(rel.removesuffix(layout.AGE_SUFFIX))
                if clear and clear.get("sha256") == sha256_hex(data):
                    clear["age_sha256"] = sha256_hex(encrypted)
            tx.stage(root / layout.MANIFEST, manifest.to_bytes(), PUBLIC_FILE_MODE)
            tx.stage(root / layout.STATE, state.to_bytes(), SECRET_FILE_MODE)
        if new_identity:
            (root / layout.IDENTITY_NEW).replace(root / layout.IDENTITY)
        return RekeyResult(
            files=[p.relative_to(root).as_posix() for p in files],
            new_identity=own if new_identity else None,
        )
