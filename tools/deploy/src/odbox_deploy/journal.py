"""The deploy's journal: one atomically replaced JSON file that says how far a deploy got, so a
run killed at any step (kill -9, a power cut) is finished or rolled back by the next one.

Phases, in order: `snapshot` (taking the pre-deploy snapshot: nothing changed yet), `stopping`,
`updating` (the live database may be touched from here), `starting`, `checking`, `recording`
(health passed); on a failure `rolling-back`, `code-rollback`, `restarting`. A run that ends
removes the journal and writes `last.json`, which `status` reads.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from odbox_common.errors import LockHeldError
from odbox_common.files import lock_or_refuse, write_private

# Before `updating` the live database is untouched: a re-run starts Odoo and begins anew.
UNTOUCHED = ("snapshot", "stopping")
FORWARD = ("updating", "starting", "checking")  # the database may be half updated: roll back
ROLLING_BACK = ("rolling-back", "code-rollback", "restarting")


@dataclass
class Journal:
    id: str
    phase: str
    modules: list[str] = field(default_factory=list)
    odoo_arguments: list[str] = field(default_factory=list)
    snapshot: str | None = None
    log: str | None = None
    failure: str | None = None  # what failed, once rolling back
    module: str | None = None  # the module Odoo was loading when it failed

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Journal:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


@dataclass(frozen=True)
class StateDir:
    """The deploy's own folder (0700): the journal, last.json, the update logs."""

    path: Path

    @property
    def journal_file(self) -> Path:
        return self.path / "journal.json"

    @property
    def last_file(self) -> Path:
        return self.path / "last.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def prepare(self) -> None:
        for folder in (self.path, self.logs):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def lock(self) -> int:
        """The deploy lock, held until the process ends (exit 4 when another run holds it)."""
        self.prepare()
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            lock_or_refuse(fd, f"another odbox-deploy run holds {self.path / 'lock'}")
        except LockHeldError:
            os.close(fd)
            raise
        return fd

    def read(self) -> Journal | None:
        try:
            return Journal.from_json(json.loads(self.journal_file.read_text()))
        except FileNotFoundError:
            return None

    def write(self, journal: Journal) -> None:
        write_private(self.journal_file, json.dumps(asdict(journal), indent=2).encode())

    def finish(self, result: dict[str, Any]) -> None:
        """last.json first, then the journal goes: a kill between the two leaves a journal whose
        phase the next run finishes again (each of its steps may run twice)."""
        write_private(self.last_file, json.dumps(result, indent=2).encode())
        self.journal_file.unlink(missing_ok=True)

    def last(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.last_file.read_text())
        except FileNotFoundError:
            return None
        return doc
