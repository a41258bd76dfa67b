"""Phases of a long run and waiting for AWS: the display is the tools' one
(`odbox_common.progress`: a spinner, the step, its time on a terminal; timestamped lines
otherwise), polling is ec2-install's own."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from odbox_common.errors import ToolError
from odbox_common.progress import Lines, Phases, Spinners, phases_for, say, write

__all__ = ["Lines", "Phases", "Spinners", "phases_for", "poll", "say", "write"]


def poll(
    what: str, timeout: float, check: Callable[[], Any], error: type[ToolError] = ToolError
) -> Any:
    """Call `check` now and every EC2_INSTALL_POLL_SECONDS (5) until it returns something
    truthy; `error` after `timeout` seconds."""
    interval = float(os.environ.get("EC2_INSTALL_POLL_SECONDS") or 5)
    deadline = time.monotonic() + timeout
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            raise error(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
