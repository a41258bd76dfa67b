"""`dbinit status` and `dbinit wait`: is the server down, running, or ready for connections?

The same question `pg_isready` asks, through libpq's PQping: it needs no valid
role or database, so it works before setup and as any system user.

- down: nothing answers at the address (no socket, connection refused);
- running: the server answers but rejects connections (starting up, shutting
  down, or in crash recovery);
- ready: the server accepts connections.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dbinit.connect import Target
from odbox_common.errors import ToolError

DOWN, RUNNING, READY = "down", "running", "ready"


@dataclass(frozen=True)
class Status:
    state: str
    where: str
    detail: str = ""

    def to_json(self) -> dict[str, str | int]:
        return {"schema": 1, "state": self.state, "server": self.where, "detail": self.detail}


def _reason(target: Target) -> str:
    """Why a connection fails, in libpq's words (for the messages only)."""
    import psycopg

    from dbinit.connect import describe

    try:
        psycopg.connect(target.conninfo(), connect_timeout=2).close()
    except psycopg.Error as e:
        return describe(e)
    return ""


def status(target: Target, *, explain: bool = True) -> Status:
    from psycopg import pq

    result = pq.PGconn.ping(target.conninfo().encode())
    if result == pq.Ping.OK:
        return Status(READY, target.where)
    if result == pq.Ping.REJECT:
        return Status(RUNNING, target.where, _reason(target) if explain else "")
    if result == pq.Ping.NO_ATTEMPT:
        raise ToolError(f"cannot ask {target.where}: the connection settings are invalid")
    return Status(DOWN, target.where, _reason(target) if explain else "")


def wait(
    target: Target,
    timeout: float,
    *,
    interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Return the seconds waited once the server is ready; ToolError after `timeout` seconds."""
    start = clock()
    while True:
        if status(target, explain=False).state == READY:
            return clock() - start
        if clock() - start >= timeout:
            last = status(target)
            detail = f" ({last.detail})" if last.detail else ""
            raise ToolError(
                f"PostgreSQL at {target.where} was not ready within {timeout:g} s; "
                f"it is {last.state}{detail}"
            )
        time.sleep(interval)
