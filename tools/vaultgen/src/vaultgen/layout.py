"""The vault layout: every file vaultgen manages, what it is made from, and its mode.

See tools/vaultgen/README.md ("Vault layout") for the same contract in prose.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from odbox_common.errors import ToolError as VaultError
from odbox_common.errors import UsageError
from vaultgen.files import TEMP_MARKER

IDENTITY = "age.key"
IDENTITY_NEW = "age.key.new"  # only while `rekey --new-identity` runs
IDENTITY_OLD_PREFIX = "age.key.old-"  # what `rekey --new-identity` keeps of the old identity
RECIPIENTS = "recipients.txt"
GITIGNORE = ".gitignore"
MANIFEST = "manifest.json"  # public and committed: which recipients each .age is encrypted to
STATE = ".vaultgen-state.json"  # local cache of content hashes; never the source of truth
PENDING = ".vaultgen-pending.json"  # local: SHA-256 of the .age files a run is renaming
AGE_SUFFIX = ".age"
PRIVATE_DIRS = ("", "passwords", "certs", "ssh")

LEAF_DAYS = 825  # the longest validity browsers and Apple platforms accept
REQUIRED_PASSWORDS = ("root", "admin", "odoo-admin", "pgadmin-admin")
DEFAULT_CN = "localhost"
CA_STEM = "vault-ca"
SSH_KEY = "ssh/id_ed25519"
# odbox-backup's authentication key (tools/backup/FORMAT.md, "Authentication"): the box signs
# and checks its repository with it, the admin needs it to restore anywhere else.
BACKUP_AUTH_KEY = "backup-auth.key"

GITIGNORE_TEXT = b"""\
# Written by vaultgen. Only encrypted (*.age) and public files may be committed:
# everything else in this folder is a secret in cleartext or a local cache.
*
!*/
!*.age
!*.pub
!/.gitignore
!/recipients.txt
!/manifest.json
"""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class Kind(Enum):
    PASSWORD = "password"  # noqa: S105 (a kind name)
    SHA512 = "sha512 hash"
    YESCRYPT = "yescrypt hash"
    CA_KEY = "CA key"
    CA_CERT = "CA certificate"
    LEAF_KEY = "TLS key"
    LEAF_CERT = "TLS certificate"
    SSH_KEY = "SSH private key"
    SSH_PUB = "SSH public key"
    BACKUP_AUTH_KEY = "odbox-backup authentication key"


SECRET_KINDS = {
    Kind.PASSWORD,
    Kind.SHA512,
    Kind.YESCRYPT,
    Kind.CA_KEY,
    Kind.LEAF_KEY,
    Kind.SSH_KEY,
    Kind.BACKUP_AUTH_KEY,
}


@dataclass(frozen=True)
class Item:
    """One cleartext file of the vault and, unless it is public, its `.age` twin."""

    path: str  # relative to the vault, cleartext
    kind: Kind
    name: str  # password name, certificate file stem, or key name
    deps: tuple[str, ...] = ()

    @property
    def encrypted(self) -> bool:
        return self.kind is not Kind.SSH_PUB

    @property
    def secret(self) -> bool:
        return self.kind in SECRET_KINDS

    @property
    def mode(self) -> int:
        return 0o600 if self.secret else 0o644

    @property
    def age_path(self) -> str:
        return self.path + AGE_SUFFIX

    @property
    def derived(self) -> bool:
        return bool(self.deps)


def check_name(name: str, what: str = "password name") -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"invalid {what} {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 64, not starting with '.', '_' or '-')"
        )
    return name


def check_common_name(cn: str) -> str:
    """A DNS name (a leading `*.` wildcard allowed) or an IP address."""
    try:
        ipaddress.ip_address(cn)
        return cn
    except ValueError:
        pass
    labels = cn.split(".")
    if labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if len(cn) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise UsageError(f"invalid certificate name {cn!r}: expected a DNS name or an IP address")
    return cn


def cert_stem(cn: str) -> str:
    """The file stem for a CN: `*.example.com` is stored as `wildcard.example.com`."""
    check_common_name(cn)
    stem = "wildcard" + cn[1:] if cn.startswith("*.") else cn
    return stem.replace(":", "_")  # IPv6 addresses


def cn_of_stem(stem: str) -> str:
    if stem.startswith("wildcard."):
        return "*" + stem[len("wildcard") :]
    if "_" in stem:  # never in a DNS name (check_common_name): an IPv6 address
        return stem.replace("_", ":")
    return stem


def password_items(name: str) -> list[Item]:
    txt = f"passwords/{name}.txt"
    return [
        Item(txt, Kind.PASSWORD, name),
        Item(f"passwords/{name}.sha512", Kind.SHA512, name, (txt,)),
        Item(f"passwords/{name}.yesc", Kind.YESCRYPT, name, (txt,)),
    ]


def ca_items() -> list[Item]:
    key = f"certs/{CA_STEM}-key.pem"
    return [
        Item(key, Kind.CA_KEY, CA_STEM),
        Item(f"certs/{CA_STEM}-cert.pem", Kind.CA_CERT, CA_STEM, (key,)),
    ]


def leaf_items(stem: str) -> list[Item]:
    key = f"certs/{stem}-key.pem"
    ca_cert, ca_key = f"certs/{CA_STEM}-cert.pem", f"certs/{CA_STEM}-key.pem"
    return [
        Item(key, Kind.LEAF_KEY, stem),
        Item(f"certs/{stem}-cert.pem", Kind.LEAF_CERT, stem, (key, ca_cert, ca_key)),
    ]


def ssh_items() -> list[Item]:
    return [
        Item(SSH_KEY, Kind.SSH_KEY, "id_ed25519"),
        Item(SSH_KEY + ".pub", Kind.SSH_PUB, "id_ed25519", (SSH_KEY,)),
    ]


def _stems(folder: Path, suffixes: Iterable[str]) -> set[str]:
    found = set()
    if folder.is_dir():
        for entry in folder.iterdir():
            for suffix in suffixes:
                if entry.name.endswith(suffix) and not entry.name.startswith("."):
                    found.add(entry.name[: -len(suffix)])
    return found


def discover(
    root: Path, passwords: Iterable[str] = (), leaf_stems: Iterable[str] = ()
) -> list[Item]:
    """Every item of the vault at `root`, inputs before what is made from them."""
    names = set(REQUIRED_PASSWORDS) | set(passwords)
    names |= {n for n in _stems(root / "passwords", (".txt", ".txt.age")) if _NAME.match(n)}
    stems = {DEFAULT_CN, *leaf_stems}
    stems |= _stems(root / "certs", ("-key.pem", "-key.pem.age", "-cert.pem", "-cert.pem.age"))
    stems.discard(CA_STEM)
    items: list[Item] = []
    for name in sorted(names):
        items += password_items(name)
    items += ca_items()
    for stem in sorted(stems):
        items += leaf_items(stem)
    items += ssh_items()
    items.append(Item(BACKUP_AUTH_KEY, Kind.BACKUP_AUTH_KEY, "backup-auth"))
    return items


def require_vault(root: Path) -> None:
    if not root.exists():
        raise UsageError(f"no vault at {root}: create one with `vaultgen generate`")
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder: give --vault a vault folder")


def refuse_symlinked_folders(root: Path) -> None:
    """Links inside the vault could make vaultgen read, write or chmod files elsewhere."""
    for folder in PRIVATE_DIRS[1:]:
        if (root / folder).is_symlink():
            raise VaultError(
                f"{root / folder} is a symbolic link: vaultgen does not follow links inside "
                "the vault; make it a folder"
            )


def secret_files(root: Path, items: Iterable[Item]) -> list[str]:
    old_keys = sorted(p.name for p in root.glob(IDENTITY_OLD_PREFIX + "*"))
    return [IDENTITY, STATE, *old_keys, *(i.path for i in items if i.secret)]


def loose_modes(root: Path, items: Iterable[Item]) -> list[tuple[str, int, int]]:
    """(path, mode, wanted mode) of every private folder and secret file others can read."""
    found = []
    for folder in PRIVATE_DIRS:
        path = root / folder
        if path.is_dir() and not path.is_symlink() and path.stat().st_mode & 0o077:
            found.append((folder or ".", path.stat().st_mode & 0o777, 0o700))
    for rel in secret_files(root, items):
        path = root / rel
        if not path.is_symlink() and path.is_file() and path.stat().st_mode & 0o077:
            found.append((rel, path.stat().st_mode & 0o777, 0o600))
    return found


KNOWN_TOP_LEVEL = {
    IDENTITY, RECIPIENTS, GITIGNORE, MANIFEST, STATE, PENDING, ".lock", "passwords", "certs",
    "ssh", BACKUP_AUTH_KEY, BACKUP_AUTH_KEY + AGE_SUFFIX,
}  # fmt: skip


def refuse_foreign_folder(root: Path) -> None:
    """A new vault goes into a new or empty folder, never over a project or into another vault."""
    for parent in root.resolve().parents:
        manifest = parent / MANIFEST
        if manifest.is_file() and b"Written by vaultgen" in manifest.read_bytes()[:300]:
            raise VaultError(f"{root} is inside the vault {parent}: give --vault the vault itself")
    if root.is_dir():
        foreign = sorted(
            p.name
            for p in root.iterdir()
            if p.name not in KNOWN_TOP_LEVEL
            and TEMP_MARKER not in p.name
            and not p.name.startswith(IDENTITY_OLD_PREFIX)
        )
        if foreign:
            raise VaultError(
                f"{root} is not empty and is no vault (it holds {', '.join(foreign[:3])}): "
                "give --vault a new or empty folder"
            )


def leftovers(root: Path, items: Iterable[Item]) -> list[str]:
    """Files in the layout's folders that belong to no item (e.g. the hashes of a removed
    password): still committed, never updated."""
    known = {i.path for i in items} | {i.age_path for i in items if i.encrypted}
    found = []
    for folder in PRIVATE_DIRS[1:]:
        if (root / folder).is_dir():
            for path in sorted((root / folder).iterdir()):
                rel = f"{folder}/{path.name}"
                if rel not in known and TEMP_MARKER not in path.name:
                    found.append(rel)
    return found
