"""Ctrl-C, SIGTERM (systemd) and SIGHUP (a closed terminal, a lost ssh) for long runs that
must clean up: first as an interruption the run catches, then ignored while it cleans up."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _handled_by(handler: Any) -> Iterator[None]:
    """All three handled by `handler` (main thread only: elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = [signal.signal(number, handler) for number in SIGNALS]
    try:
        yield
    finally:
        for number, old in zip(SIGNALS, before, strict=True):
            signal.signal(number, old)


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def interrupts_as_exceptions() -> contextlib.AbstractContextManager[None]:
    """Each of them raises KeyboardInterrupt, so the run's cleanup path runs."""
    return _handled_by(_stop)


def uninterrupted() -> contextlib.AbstractContextManager[None]:
    """A cleanup (or a commit) runs to its end: signals meanwhile are ignored."""
    return _handled_by(signal.SIG_IGN)
