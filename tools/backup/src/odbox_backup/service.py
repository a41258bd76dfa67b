"""Stopping Odoo for a cold backup or a restore's swap, and always starting it again.

`--odoo-service NAME` means `systemctl stop NAME` / `systemctl start NAME`;
`--odoo-stop CMD` and `--odoo-start CMD` give any other commands (split like
a shell would, but run without one). With neither, Odoo is left alone.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from odbox_common import processes
from odbox_common.errors import ToolError

TIMEOUT = 300


class ServiceError(ToolError):
    """Odoo could not be stopped or started."""


@dataclass(frozen=True)
class OdooService:
    stop: tuple[str, ...] = ()
    start: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, service: str | None, stop: str | None, start: str | None) -> OdooService:
        if service:
            return cls(("systemctl", "stop", service), ("systemctl", "start", service))
        if bool(stop) != bool(start):
            raise ToolError("--odoo-stop and --odoo-start go together: give both or neither")
        return cls(tuple(shlex.split(stop or "")), tuple(shlex.split(start or "")))

    @property
    def managed(self) -> bool:
        return bool(self.stop)

    @staticmethod
    def _run(command: tuple[str, ...], what: str) -> None:
        processes.run_command(command, f"{what} Odoo", TIMEOUT, ServiceError)

    @contextlib.contextmanager
    def stopped(self, report: Callable[[str], None] = lambda _: None) -> Iterator[None]:
        """Odoo stopped inside; started again on the way out, whatever happened inside."""
        if not self.managed:
            yield
            return
        report(f"stopping Odoo: {shlex.join(self.stop)}")
        try:
            self._run(self.stop, "stop")
            yield
        finally:
            report(f"starting Odoo: {shlex.join(self.start)}")
            self._run(self.start, "start")
