"""What the database says: installed modules (ir_module_module) and the checksums the last
deploy recorded.

The checksums live in Odoo's own ir_config_parameter (key `odbox_deploy.checksums`, one JSON
document), not in a schema of our own: they then travel with the database in every dump, snapshot
and Odoo zip, so a restored database (a rollback, a staging copy) carries the checksums of the code
it was updated with, and nothing new is added for dbinit's privilege audit or a restore's grant
copy to know about. An Odoo administrator can edit the parameter (Settings, Technical); they can
already run any module update from Apps, so this gives them nothing new (README, threat model).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from odbox_common.errors import ToolError

if TYPE_CHECKING:
    import psycopg

KEY = "odbox_deploy.checksums"
# Set in the live database just before `odoo -u` and never in a snapshot taken before it: a
# database that holds the deploy's marker is the one the update touched.
MARKER = "odbox_deploy.in_progress"
FORMAT = 1


@dataclass
class Recorded:
    """The checksums of the code the database was last deployed with."""

    odoo: str | None = None
    series: str | None = None
    modules: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str | None) -> Recorded | None:
        if value is None:
            return None
        try:
            doc = json.loads(value)
            modules = doc["modules"]
            assert isinstance(modules, dict)
            return cls(
                doc.get("odoo"), doc.get("series"), {str(k): str(v) for k, v in modules.items()}
            )
        except (ValueError, KeyError, TypeError, AssertionError):
            return None  # unreadable: as if never recorded (a first deploy records anew)

    def dump(self) -> str:
        doc = {"format": FORMAT, "odoo": self.odoo, "series": self.series,
               "modules": dict(sorted(self.modules.items()))}  # fmt: skip
        return json.dumps(doc, separators=(",", ":"))


@dataclass(frozen=True)
class DatabaseState:
    modules: dict[str, str]  # every module Odoo knows: name -> state
    recorded: Recorded | None
    marker: str | None

    def installed(self) -> list[str]:
        return sorted(n for n, s in self.modules.items() if s in ("installed", "to upgrade"))


class NoOdooYet(ToolError):
    """The database is empty (a new box before odoo-initialize): nothing to deploy."""


@contextmanager
def connect(conninfo: str) -> Iterator[psycopg.Connection[Any]]:
    import psycopg

    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=30)
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ToolError(f"cannot connect to the database: {first}; check --dsn/ODBOX_DSN and "
                        "--db, and that PostgreSQL runs") from None  # fmt: skip
    with conn:
        yield conn


def read_state(conninfo: str) -> DatabaseState:
    with connect(conninfo) as conn:
        if conn.execute("SELECT to_regclass('public.ir_module_module')").fetchone() == (None,):
            raise NoOdooYet("the database has no Odoo in it (no ir_module_module): a new box's "
                            "odoo-initialize installs it first")  # fmt: skip
        modules = dict(conn.execute("SELECT name, state FROM ir_module_module").fetchall())
        params = dict(conn.execute(
            "SELECT key, value FROM ir_config_parameter WHERE key IN (%s, %s)", (KEY, MARKER)
        ).fetchall())  # fmt: skip
    return DatabaseState(modules, Recorded.parse(params.get(KEY)), params.get(MARKER))


def _set(conn: psycopg.Connection[Any], key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO ir_config_parameter (key, value, create_date, write_date) "
        "VALUES (%s, %s, now() at time zone 'UTC', now() at time zone 'UTC') "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, write_date = EXCLUDED.write_date",
        (key, value),
    )


def write_record(conninfo: str, recorded: Recorded) -> None:
    """Record the checksums and clear the marker, in one transaction."""
    with connect(conninfo) as conn, conn.transaction():
        _set(conn, KEY, recorded.dump())
        conn.execute("DELETE FROM ir_config_parameter WHERE key = %s", (MARKER,))


def set_marker(conninfo: str, deploy_id: str) -> None:
    with connect(conninfo) as conn:
        _set(conn, MARKER, deploy_id)
