"""What a run reads and counts (its source, its counters, its one error) and how it finds and
calls PostgreSQL's programs: shared by the dump (dump.py), the filestore (filestore.py), the
run (backup.py), restore and import."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odbox_common.errors import ToolError


class BackupFailed(ToolError):
    """The run could not complete; no snapshot was written."""


@dataclass
class Counters:
    objects: int = 0
    new_objects: int = 0
    bytes: int = 0
    new_bytes: int = 0

    def totals(self, started: float) -> dict[str, Any]:
        """The manifest's `totals`, `started` being the run's time.monotonic() at its start."""
        return {"bytes": self.bytes, "objects": self.objects, "new_objects": self.new_objects,
                "new_bytes": self.new_bytes,
                "seconds": round(time.monotonic() - started, 3)}  # fmt: skip

    def merge(self, other: Counters) -> None:
        self.objects += other.objects
        self.bytes += other.bytes
        self.new_objects += other.new_objects
        self.new_bytes += other.new_bytes

    def add(self, size: int, new: bool) -> None:
        self.objects += 1
        self.bytes += size
        if new:
            self.new_objects += 1
            self.new_bytes += size


@dataclass
class Source:
    """What to back up: a database (libpq connection) and its filestore folder."""

    conninfo: str
    dbname: str
    filestore: Path
    pg_bin: Path | None = None
    mode: str = "hot"


def find_pg_tool(name: str, pg_bin: Path | None = None) -> str:
    """pg_dump/pg_restore/psql: --pg-bin, else PATH, else Debian's newest versioned folder."""
    if pg_bin is not None:
        return str(pg_bin / name)
    found = shutil.which(name)
    if found:
        return found
    versioned = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                       key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                       else 0)  # fmt: skip
    if versioned:
        return str(versioned[-1])
    raise BackupFailed(f"{name} was not found: install the PostgreSQL client, or pass --pg-bin")


def without_password(conninfo: str, **changes: str) -> tuple[str, dict[str, str]]:
    """`conninfo` (with `changes`) for a child's argv, and the environment that carries its
    password (PGPASSWORD): /proc/PID/cmdline is readable by every user of the box."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items()} | changes
    password = params.pop("password", None)
    return make_conninfo(**params), ({"PGPASSWORD": password} if password else {})
