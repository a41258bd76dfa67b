"""A repository as FORMAT.md describes it: config, content-addressed objects, snapshot manifests.

Objects and manifests are `zstd(content)`, then age-encrypted to the
repository's recipients when it has any. An object's name is the SHA-256 of
its content, checked on every read.

Version 2 stores a small file's content in a pack with many others: one age
file and one write for hundreds of files, where version 1 made an age header
(a new X25519 key, as age requires of every file) and a file in the repository
for each. Each pack has a plain index (names, offsets, lengths) that a box
without the key can read to know what is stored.

The parts, each readable alone: codec.py (zstd, age, the authentication key and MACs),
indexes.py and packs.py (what is stored, where, and how it is written and read back),
manifests.py (snapshot IDs and manifests). This module is the facade: the config, and
opening or making a repository.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from odbox_backup.codec import (
    AUTH_KEY_ENV,
    ZSTD_LEVEL,
    Authenticator,
    AuthKey,
    Codec,
    CorruptObject,
    NoRepository,
    RepositoryError,
    Unauthenticated,
)
from odbox_backup.manifests import Snapshots
from odbox_backup.store import NotFound, Store
from odbox_common.age import parse_recipients, recipient_lines
from odbox_common.errors import UsageError

# The errors and the key, for the many callers that import them with `Repository`.
__all__ = ["AuthKey", "Config", "CorruptObject", "NoRepository", "Repository",
           "RepositoryError", "Unauthenticated"]  # fmt: skip

FORMAT = "odbox-backup"
VERSION = 3
READS = (1, 2, 3)  # versions 1 and 2 (not authenticated) are read, never written
AUTHENTICATED = 3  # the first version whose config, manifests and indexes carry a MAC
CONFIG = "config.json"
CHUNKING = {"algorithm": "fastcdc2020", "min": 256 << 10, "avg": 1 << 20, "max": 4 << 20}
# Whole files under `below` bytes go into packs, closed at `target` bytes of zstd frames
# (restic's default pack is 16 MiB; half that keeps a restore's memory low: it holds one).
PACKING = {"below": 1 << 20, "target": 8 << 20}


@dataclass(frozen=True)
class Config:
    id: str
    created: str
    recipients: tuple[str, ...]
    chunking: dict[str, Any]
    compression_level: int = ZSTD_LEVEL
    version: int = VERSION
    packing: dict[str, int] | None = None  # None in version 1: every content is an object
    key_check: str | None = None  # version 3: the MAC of nothing, to tell a wrong key

    @property
    def encrypted(self) -> bool:
        return bool(self.recipients)

    @property
    def authenticated(self) -> bool:
        return self.version >= AUTHENTICATED

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "id": self.id,
            "created": self.created,
            "compression": "zstd",
            "compression_level": self.compression_level,
            "chunking": self.chunking,
            "recipients": list(self.recipients),
            **({"packing": self.packing} if self.packing is not None else {}),
            **(
                {"auth": {"algorithm": "hmac-sha256", "key_check": self.key_check}}
                if self.key_check is not None
                else {}
            ),
        }


def config_body(document: dict[str, Any]) -> bytes:
    """What config.json's `mac` covers: every other field, as canonical JSON."""
    rest = {k: v for k, v in document.items() if k != "mac"}
    return json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()


class Repository(Snapshots):
    """A repository: its store, config, codec and (version 3) MACs; what it stores and its
    snapshots are the methods of its bases (`Snapshots` over `Packs` over `Indexes`)."""

    def __init__(
        self,
        store: Store,
        config: Config,
        identities: Sequence[Any] = (),
        auth: Authenticator | None = None,
    ) -> None:
        self.identities = list(identities)
        codec = Codec(config.recipients, self.identities, config.compression_level)
        super().__init__(store, config, codec, auth)

    @classmethod
    def init(
        cls, store: Store, recipients: Sequence[str] = (), key: AuthKey | None = None
    ) -> Repository:
        """A new repository at `store`, authenticated under `key` (else the one
        ODBOX_BACKUP_AUTH_KEY_FILE names)."""
        key = key or AuthKey.from_env()
        if key is None:
            raise UsageError(f"a new repository needs an authentication key ({AUTH_KEY_ENV})")
        recipients = cls.check_new(store, recipients)
        repository_id = secrets.token_hex(16)
        auth = key.for_repository(repository_id)
        config = Config(
            id=repository_id,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            recipients=tuple(recipients),
            chunking=dict(CHUNKING),
            packing=dict(PACKING),
            key_check=auth.mac("key-check", "", b""),
        )
        document = config.to_json()
        document["mac"] = auth.mac("config", "", config_body(document))
        store.put(CONFIG, (json.dumps(document, indent=2) + "\n").encode())
        return cls(store, config, (), auth)

    @staticmethod
    def check_new(store: Store, recipients: Sequence[str]) -> list[str]:
        """Refuse, before anything is written, what `init` would refuse; the recipients."""
        recipients = recipient_lines(recipients)  # what is parsed is what is stored
        parse_recipients(recipients)
        if store.exists(CONFIG):
            raise RepositoryError(f"{store.url} is already a repository; nothing was changed")
        if any(True for _ in store.list("")):
            raise RepositoryError(
                f"{store.url} is not empty: a repository is made only where nothing is"
            )
        return recipients

    @classmethod
    def open(
        cls, store: Store, identities: Sequence[Any] = (), key: AuthKey | None = None
    ) -> Repository:
        """The repository at `store`. `key`: the authentication key, else the one
        ODBOX_BACKUP_AUTH_KEY_FILE names. A version 3 repository needs it, and its
        config.json must carry its MAC (recipients swapped or emptied: refused); one of
        version 1 or 2 is read without it, never written, and refused when a key is given
        (an attacker's config.json of version 2 would otherwise undo the authentication)."""
        key = key or AuthKey.from_env()
        try:
            raw = store.get(CONFIG)
        except NotFound as e:
            raise NoRepository(
                f"no repository at {store.url}: create one with `odbox-backup init`"
            ) from e
        try:
            document = json.loads(raw)
            if document.get("format") != FORMAT:
                raise ValueError("not an odbox-backup repository")
        except (ValueError, AttributeError) as e:
            raise RepositoryError(f"{store.url}/{CONFIG} is damaged or foreign: {e}") from e
        version = document.get("version")
        if version not in READS:
            raise RepositoryError(
                f"{store.url} is a version {version} repository; this odbox-backup reads "
                f"versions {READS[0]} to {READS[-1]} only"
            )
        try:
            config = Config(
                id=str(document["id"]),
                created=str(document["created"]),
                recipients=tuple(document.get("recipients", [])),
                chunking=dict(document["chunking"]),
                compression_level=int(document.get("compression_level", ZSTD_LEVEL)),
                version=int(version),
                packing=(
                    {
                        "below": int(document["packing"]["below"]),
                        "target": int(document["packing"]["target"]),
                    }
                    if version >= 2
                    else None
                ),
                key_check=str(document["auth"]["key_check"]) if version >= AUTHENTICATED else None,
            )
            recipients = document.get("recipients", [])
            if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
                raise TypeError("recipients is not a list of strings")
        except (KeyError, TypeError, ValueError) as e:
            raise RepositoryError(f"{store.url}/{CONFIG} lacks a field: {e}") from e
        if not config.authenticated:
            if key is not None:
                raise RepositoryError(
                    f"{store.url} is a version {version} repository, whose files are not "
                    "authenticated, but an authentication key was given: refused (its "
                    "config.json may have been replaced). To read an old repository, run "
                    f"without --auth-key-file and {AUTH_KEY_ENV}"
                )
            return cls(store, config, identities)
        if key is None:
            raise UsageError(
                f"{store.url} is authenticated: pass --auth-key-file (or set {AUTH_KEY_ENV}) "
                "with the key `odbox-backup init` wrote"
            )
        auth = key.for_repository(config.id)
        if not hmac.compare_digest(auth.mac("key-check", "", b""), config.key_check or ""):
            raise RepositoryError(
                f"{key.source} is not the authentication key of {store.url} (or its "
                f"{CONFIG} was replaced): nothing was read or written"
            )
        if not hmac.compare_digest(auth.mac("config", "", config_body(document)),
                                   str(document.get("mac", ""))):  # fmt: skip
            raise Unauthenticated(
                f"{store.url}/{CONFIG} was changed since `init` (its MAC does not match: "
                "recipients swapped or emptied?): refused, nothing was read or written"
            )
        return cls(store, config, identities, auth)
