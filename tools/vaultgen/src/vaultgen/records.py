"""The two records beside the vault files: the committed manifest and the local state cache.

`manifest.json` is public and committed: for each `.age` file, the SHA-256 of its
bytes and a fingerprint of the recipient set it is encrypted to. age does not
say to which X25519 recipients a file is encrypted, so without it a new clone
could not tell whether a recipient was added.

The manifest is also what tells a `.age` vaultgen wrote from one written by
anybody else: age files are encrypted to public keys, so whoever can push a
commit can encrypt a password of their choosing. A `.age` whose SHA-256 the
manifest does not record is refused until the user accepts it by name
(`untrusted`). `.vaultgen-pending.json` (local, ignored by git) holds the
SHA-256 of the `.age` files a run is renaming into place until it has renamed
the manifest too, so a run killed in between is finished by the next, not
taken for a forgery.

`.vaultgen-state.json` is local and ignored by git: content hashes of the
cleartext files, of the `.age` bytes each was last synced with, and of the
inputs a derived file was made from. It only lets a run with nothing to do skip
decryption and hash verification; when it is missing or wrong, vaultgen decides
from the files themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odbox_common.errors import ToolError as VaultError
from odbox_common.files import fsync_dir
from vaultgen import layout
from vaultgen.files import SECRET_FILE_MODE, read_or_none, sha256_hex, write_atomic

FORMAT = 1


def dump(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def _read_document(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, None if there is no file; ValueError if it is not one."""
    raw = read_or_none(path)
    if raw is None:
        return None
    document = json.loads(raw)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


def _file_records(value: object) -> dict[str, dict[str, str]]:
    """{path: {field: text}}, or ValueError."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str)
        and isinstance(v, dict)
        and all(isinstance(f, str) and isinstance(t, str) for f, t in v.items())
        for k, v in value.items()
    ):
        raise ValueError("'files' is not a map of file records")
    return value


def _is_leaf_spec(value: dict[str, Any]) -> bool:
    return (
        isinstance(value.get("cn"), str)
        and isinstance(value.get("sans"), list)
        and all(isinstance(s, str) for s in value["sans"])
        and isinstance(value.get("days"), int)
    )


@dataclass
class Manifest:
    identity: str | None = None
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    # certificate stem -> {"cn", "sans", "days"} the vault CA issues it for, or {"imported": true}
    certificates: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            doc = _read_document(path)
            if doc is None:
                return cls()
            if doc.get("format") != FORMAT:
                raise VaultError(
                    f"{path} has format {doc.get('format')!r}; this vaultgen reads format {FORMAT}"
                )
            identity = doc.get("identity")
            certificates = doc.get("certificates", {})
            if not (identity is None or isinstance(identity, str)):
                raise ValueError("'identity' is not a string")
            if not isinstance(certificates, dict) or not all(
                isinstance(v, dict) and (v.get("imported") is True or _is_leaf_spec(v))
                for v in certificates.values()
            ):
                raise ValueError("'certificates' is not a map of certificate records")
            return cls(identity, _file_records(doc.get("files", {})), certificates)
        except ValueError as e:
            raise VaultError(
                f"{path} is corrupt ({e}); restore it from git (it is what tells the .age "
                "files vaultgen wrote from forged ones)"
            ) from e

    def to_bytes(self) -> bytes:
        return dump(
            {
                "format": FORMAT,
                "comment": "Written by vaultgen: public facts only (see tools/vaultgen/README.md).",
                "identity": self.identity,
                "certificates": self.certificates,
                "files": self.files,
            }
        )


@dataclass
class State:
    files: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            doc = _read_document(path)
            if doc is None or doc.get("format") != FORMAT:
                return cls()
            return cls(files=_file_records(doc.get("files")))
        except ValueError:
            return cls()  # a cache: when unreadable, decide from the files

    def to_bytes(self) -> bytes:
        return dump({"format": FORMAT, "files": self.files})


def pending_hashes(root: Path) -> set[str]:
    """SHA-256 of the `.age` files an unfinished run of this checkout renamed into place.

    Only a journal this user wrote here counts: one that came with a commit (git tracks it,
    or it is not private to us) would let whoever pushed it vouch for their own `.age`."""
    path = root / layout.PENDING
    try:
        doc = _read_document(path)
        if doc is None:
            return set()
        st = path.stat()
    except (ValueError, OSError):
        return set()
    if st.st_uid != os.geteuid() or st.st_mode & 0o077 or _tracked_by_git(path):
        return set()
    hashes = doc.get("age_sha256", [])
    return {h for h in hashes if isinstance(h, str)} if isinstance(hashes, list) else set()


def _tracked_by_git(path: Path) -> bool:
    git = shutil.which("git")
    if git is None:
        return False
    listed = subprocess.run(
        [git, "-C", str(path.parent), "ls-files", "--", path.name],
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(listed.stdout.strip())


def note_pending(root: Path, age_files: Iterable[bytes]) -> None:
    """Before the first `.age` is renamed: remember what this run writes (kept with what an
    interrupted run wrote, which the manifest may not record yet either)."""
    new = {sha256_hex(data) for data in age_files}
    if new:
        hashes = sorted(pending_hashes(root) | new)
        write_atomic(root / layout.PENDING, dump({"age_sha256": hashes}), SECRET_FILE_MODE)


def clear_pending(root: Path) -> None:
    """After the manifest is renamed: it records every `.age` now."""
    with contextlib.suppress(FileNotFoundError):
        (root / layout.PENDING).unlink()
        fsync_dir(root)


def untrusted(
    manifest: Manifest, pending: set[str], age_files: dict[str, bytes], accepted: Iterable[str]
) -> list[str]:
    """The `.age` files (vault-relative) neither the manifest nor an interrupted run of ours
    accounts for, and that the user did not accept by name: written by someone else."""
    found = []
    for rel, data in sorted(age_files.items()):
        digest = sha256_hex(data)
        if manifest.files.get(rel, {}).get("sha256") != digest and digest not in pending:
            found.append(rel)
    return [rel for rel in found if rel not in set(accepted)]


def refuse_untrusted(found: list[str], command: str) -> None:
    if not found:
        return
    names = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    raise VaultError(
        f"{names} not as {layout.MANIFEST} records: written outside vaultgen, maybe forged "
        "(anyone who can push can encrypt to the vault's public keys); nothing was changed. "
        f"Restore it from git, or if you trust it, `vaultgen {command} --accept-age FILE`"
    )
