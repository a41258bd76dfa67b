"""The undo log of one `up`: what this run made, each with the call that removes it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from ec2_install import aws
from odbox_common.signals import uninterrupted


class UndoLog:
    """What this run made, each with the call that removes it, undone newest first."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None], bool]] = []

    def made(self, what: str, undo: Callable[[], None], *, needs_clean: bool = False) -> None:
        """`needs_clean`: undo only if every newer undo worked (a group in use cannot go)."""
        self._undo.append((what, undo, needs_clean))

    @property
    def items(self) -> list[str]:
        return [what for what, _, _ in self._undo]

    def rollback(self, say: Callable[[str], None]) -> tuple[list[str], list[str]]:
        """Undo newest first; every item gets its try. Signals are ignored meanwhile."""
        removed: list[str] = []
        left: list[str] = []
        with uninterrupted():
            for what, undo, needs_clean in reversed(self._undo):
                if needs_clean and left:
                    left.append(f"{what} (kept: what uses it is still there)")
                    continue
                try:
                    undo()
                    removed.append(what)
                    say_quietly(say, f"rollback: removed {what}")
                except Exception as e:
                    reason = aws.describe(e) if isinstance(e, aws.errors()) else str(e)
                    left.append(f"{what} ({reason})")
                    say_quietly(say, f"rollback: could not remove {what}: {reason}")
            self._undo.clear()
        return removed, left


def say_quietly(say: Callable[[str], None], line: str) -> None:
    """A progress line that cannot stop a rollback (stdout may be a closed pipe)."""
    with contextlib.suppress(OSError, ValueError):
        say(line)
