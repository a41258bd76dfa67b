"""The deployment's annotation `k8s-migrate.odbox/pulling` as a lease: which pull holds it.

Its value names the owner, as JSON: host, pid, the process's start time (in clock ticks
since boot, from /proc/PID/stat, so a pid used again is not taken for the owner) and
when it began. A pull takes it with the deployment's resourceVersion (a PATCH that fails
with 409 if anything changed the deployment since it was read), so of two pulls that
start together only one gets it. An owner is alive if it is on another host (nobody can
tell from here), or its pid runs on this host and started when the lease says. The value
`stopped` has no owner: a pull that ended without putting Odoo back leaves it (see
pull.py); so does any value this version cannot read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from dataclasses import dataclass

from odbox_common.errors import LockHeldError
from odbox_common.processes import running, start_ticks

PULLING = "k8s-migrate.odbox/pulling"
STOPPED = "stopped"  # no owner: the pull that scaled Odoo down ended without putting it back


class LeaseHeld(LockHeldError):
    """Another pull of the deployment is under way (exit 4)."""


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: int | None  # clock ticks since boot when the process started (Linux)
    since: str  # when it took the lease, ISO 8601 UTC

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return cls(socket.gethostname(), pid, start_ticks(pid), now)

    @classmethod
    def parse(cls, value: str | None) -> Owner | None:
        """The owner a value names; None for none (absent, `stopped`, unreadable)."""
        try:
            doc = json.loads(value or "")
            start = doc.get("start")
            return cls(
                str(doc["host"]),
                int(doc["pid"]),
                int(start) if start is not None else None,
                str(doc.get("since", "?")),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def text(self) -> str:
        doc = {"host": self.host, "pid": self.pid, "start": self.start, "since": self.since}
        return json.dumps(doc, separators=(",", ":"))

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} since {self.since}"

    def here(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        """On another host: taken as alive. Here: its pid runs (not a zombie) and started
        when the lease says."""
        if not self.here():
            return True
        return running(self.pid, self.start)


def held(namespace: str, deployment: str, owner: Owner | None) -> LeaseHeld:
    """The one line of a pull that finds another under way."""
    who = f" ({owner.describe()})" if owner is not None else ""
    return LeaseHeld(
        f"another pull of deployment {namespace}/{deployment} is under way{who}; wait for it, "
        "or if it was killed on another machine remove the annotation: "
        f"kubectl -n {namespace} annotate deployment {deployment} {PULLING}-"
    )
