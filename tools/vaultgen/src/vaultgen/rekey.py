"""Re-encrypt every `.age` file of the vault to the current recipients, optionally under a new
identity.

Works from a fresh clone that has only the `.age` files and `age.key`: it reads
the `.age` files, never the cleartext. With `--new-identity` the new key is
written to `age.key.new` first and renamed over `age.key` only after every
`.age` file has been re-encrypted and checked, so an interrupted rekey is
finished by running it again (it decrypts with either key). The old key is
kept as `age.key.old-<time>`: old commits need it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from odbox_common import age
from odbox_common.errors import ToolError as VaultError
from vaultgen import agecrypt, layout, records
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
    old_key_kept_in: str | None
    not_managed: list[str]  # .age files in the vault that vaultgen does not manage: left alone
    recipients: list[str]  # what every .age is encrypted to now


def rekey(
    root: Path,
    new_identity: bool,
    accept_age: tuple[str, ...] = (),
    identity_file: Path | None = None,
) -> RekeyResult:
    """Re-encrypt to age.key (or, with `identity_file`, to the age.key manifest.json names,
    which this checkout need not hold) and recipients.txt."""
    layout.require_vault(root)
    layout.refuse_symlinked_folders(root)
    identity_path = root / layout.IDENTITY
    if identity_file is None and read_or_none(identity_path) is None:
        raise VaultError(
            f"{identity_path} does not exist: rekey needs the current identity "
            "(or your own key with --identity, if recipients.txt lists it)"
        )
    with exclusive_lock(root):
        remove_stale_temp_files(root)
        current = agecrypt.load_identity_file(identity_file or identity_path)
        if identity_file is None:
            agecrypt.vault_recipient(current, str(identity_path))
        identities = list(current)
        pending = read_or_none(root / layout.IDENTITY_NEW)
        if pending is not None:
            # An interrupted rekey: some files may already be under the new key.
            identities += age.parse_identity_file(pending, str(root / layout.IDENTITY_NEW))
            new_identity = True
        extra_recipients = agecrypt.parse_recipients_file(root / layout.RECIPIENTS)
        items = [i for i in layout.discover(root) if i.encrypted]
        managed = [root / i.age_path for i in items if (root / i.age_path).exists()]
        others = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*" + layout.AGE_SUFFIX)
            if p not in managed and not p.name.startswith(".")
        )
        manifest = Manifest.load(root / layout.MANIFEST)
        ages = {path.relative_to(root).as_posix(): path.read_bytes() for path in managed}
        plain = {
            path: age.decrypt(ages[path.relative_to(root).as_posix()], identities, str(path))
            for path in managed
        }
        found = records.untrusted(manifest, records.pending_hashes(root), ages, accept_age)
        records.refuse_untrusted(found, "rekey")  # re-encrypting would launder a forgery
        created = None  # a new identity of this run, written only once every file is staged
        if new_identity and pending is None:
            secret, public = age.generate_identity()
            pending = created = age.identity_file_text(secret, public)
        if new_identity and pending is not None:
            target = age.parse_identity_file(pending, layout.IDENTITY_NEW)
            own = agecrypt.vault_recipient(target, layout.IDENTITY)
        elif identity_file is not None:
            if manifest.identity is None:
                raise VaultError(f"{root / layout.MANIFEST} names no vault identity to keep")
            target, own = current, manifest.identity  # the round trip is through your own key
        else:
            target = current[:1]
            own = agecrypt.vault_recipient(target, layout.IDENTITY)
        recipients = [age.parse_recipient(own, layout.IDENTITY), *extra_recipients]
        fingerprint = age.recipients_fingerprint(recipients)
        manifest.identity = own
        state = State.load(root / layout.STATE)
        staged_ages: list[bytes] = []
        tx = Transaction()
        try:
            for path, data in plain.items():
                encrypted = age.encrypt(data, recipients)
                if _round_trip(encrypted, target, path) != data:
                    raise VaultError(
                        f"re-encrypting {path} did not round-trip; nothing was changed"
                    )
                tx.stage(path, encrypted, PUBLIC_FILE_MODE)
                staged_ages.append(encrypted)
                rel = path.relative_to(root).as_posix()
                manifest.files[rel] = {"sha256": sha256_hex(encrypted), "recipients": fingerprint}
                clear = state.files.get(rel.removesuffix(layout.AGE_SUFFIX))
                if clear and clear.get("sha256") == sha256_hex(data):
                    clear["age_sha256"] = sha256_hex(encrypted)
            tx.stage(root / layout.MANIFEST, manifest.to_bytes(), PUBLIC_FILE_MODE)
            tx.stage(root / layout.STATE, state.to_bytes(), SECRET_FILE_MODE)
            if created is not None:  # before the first file encrypted to it is renamed
                write_atomic(root / layout.IDENTITY_NEW, created, SECRET_FILE_MODE)
            records.note_pending(root, staged_ages)
        except BaseException:
            # Nothing is renamed yet (a full disk, a bad file, Ctrl-C): the vault is as it was,
            # and a new identity left behind would only look like an interrupted rekey.
            tx.abort()
            if created is not None:
                (root / layout.IDENTITY_NEW).unlink(missing_ok=True)
            raise
        tx.commit()
        records.clear_pending(root)
        kept = None
        if new_identity:
            if (old := read_or_none(identity_path)) is not None:
                kept = keep_old_identity(root, old)
            (root / layout.IDENTITY_NEW).replace(identity_path)
        return RekeyResult(
            files=[p.relative_to(root).as_posix() for p in managed],
            new_identity=own if new_identity else None,
            old_key_kept_in=kept,
            not_managed=others,
            recipients=[r.canonical for r in recipients],
        )


def _round_trip(encrypted: bytes, target: list[age.Identity], path: Path) -> bytes:
    try:
        return age.decrypt(encrypted, target, str(path))
    except age.DecryptFailure:
        raise VaultError(
            "your --identity is not among the recipients any more (recipients.txt): rekey "
            "would lock you out; nothing was changed"
        ) from None


def keep_old_identity(root: Path, old: bytes) -> str:
    """Keep the replaced identity beside the vault (ignored by git, 0600): old commits need it."""
    for existing in sorted(root.glob(layout.IDENTITY_OLD_PREFIX + "*")):
        if existing.read_bytes() == old:
            return existing.name  # an interrupted rekey already kept it
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = layout.IDENTITY_OLD_PREFIX + stamp
    write_atomic(root / name, old, SECRET_FILE_MODE)
    return name
