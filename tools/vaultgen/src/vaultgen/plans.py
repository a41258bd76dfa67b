"""What a `vaultgen` run is asked for (`Request`) and what it plans to do (`Plan`: the
files it writes and the modes it tightens); `status` shows a plan as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PasswordPrompt = Callable[[str], str | None]
RECIPIENTS_CHANGED = "recipients changed"


@dataclass(frozen=True)
class LeafRequest:
    """`vaultgen certs CN --san …`: what the certificate must be valid for."""

    common_name: str
    sans: tuple[str, ...]
    days: int | None = None


@dataclass
class Request:
    """What a command asks for beyond bringing the vault up to date."""

    passwords: dict[str, str] = field(default_factory=dict)  # name -> new password
    leaves: dict[str, LeafRequest] = field(default_factory=dict)  # stem -> request
    imports: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # stem -> cert, key
    ask_password: PasswordPrompt | None = None  # None: never prompt (--batch, no terminal)
    accept_age: tuple[str, ...] = ()  # .age files the manifest does not record, accepted by name
    identity_file: Path | None = None  # a recipient's own key (--identity) instead of age.key
    expected: dict[str, bytes] = field(default_factory=dict)  # path -> content an edit began from


@dataclass(frozen=True)
class Write:
    path: str
    data: bytes
    mode: int
    reason: str
    existed: bool

    @property
    def action(self) -> str:
        if self.existed:
            return "updated"
        return "restored" if self.reason.startswith("restored") else "created"


@dataclass(frozen=True)
class Chmod:
    path: str
    mode: int
    reason: str


@dataclass(frozen=True)
class FileStatus:
    path: str
    state: str  # ok | missing | stale
    reason: str


@dataclass
class Plan:
    root: Path
    writes: list[Write]
    chmods: list[Chmod]
    tracked: list[str]  # every file the vault should have, in layout order
    recipients: list[str] = field(default_factory=list)  # what the .age files are encrypted to

    @property
    def recipients_changed(self) -> bool:
        return any(w.reason == RECIPIENTS_CHANGED for w in self.writes)

    @property
    def empty(self) -> bool:
        return not self.writes and not self.chmods

    def to_json(self) -> dict[str, Any]:
        """What a run did, for `--json` (schema 1: a key added keeps it, one renamed or
        removed makes it 2); `vault` and `files` as in `status --json`."""
        return {
            "schema": 1,
            "vault": str(self.root),
            "changed": not self.empty,
            "files": [{"path": w.path, "action": w.action, "reason": w.reason}
                      for w in self.writes]
            + [{"path": c.path, "action": "tightened", "reason": c.reason} for c in self.chmods],
            "recipients": self.recipients,
            "recipients_changed": self.recipients_changed,
        }  # fmt: skip

    def statuses(self) -> list[FileStatus]:
        written = {w.path: w for w in self.writes}
        chmodded = {c.path: c for c in self.chmods}
        result = []
        for path in self.tracked:
            if path in written:
                w = written[path]
                result.append(FileStatus(path, "stale" if w.existed else "missing", w.reason))
            elif path in chmodded:
                result.append(FileStatus(path, "stale", chmodded[path].reason))
            else:
                result.append(FileStatus(path, "ok", ""))
        result += [
            FileStatus(c.path, "stale", c.reason) for c in self.chmods if c.path not in self.tracked
        ]
        return result
