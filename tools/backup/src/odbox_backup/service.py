"""Stopping Odoo for a cold backup or a restore's swap, and always starting it again.

`--odoo-service NAME` means `systemctl stop NAME` / `systemctl start NAME`;
`--odoo-stop CMD` and `--odoo-start CMD` give any other commands (split like
a shell would, but run without one). With neither, Odoo is left alone.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT,
                                  stdin=subprocess.DEVNULL)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ServiceError(f"cannot {what} Odoo with `{shlex.join(command)}`: {e}") from e
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()
            raise ServiceError(
                f"`{shlex.join(command)}` failed to {what} Odoo (exit status {done.returncode})"
                + (f": {last[-1]}" if last else "")
            )

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
