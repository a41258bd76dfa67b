"""Progress: bars on a terminal, plain timestamped lines for the journal otherwise.

On a terminal (stderr is a tty) each phase gets a rich progress bar with bytes
and speed (a total when the phase knows it). Off a terminal, each phase is one
timestamped line when it starts and one line a minute while it lasts, so a
2 AM journal shows where a slow run was without drowning in lines.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from odbox_backup.backup import Progress
from odbox_common import console
from odbox_common.console import human_size as _size

LINE_EVERY = 60.0


@contextlib.contextmanager
def progress_for(json_output: bool = False) -> Iterator[Progress]:
    """A Progress whose `phase(text, total)` starts a new bar (or line)."""
    if json_output:
        yield Progress()
        return
    if sys.stderr.isatty():
        with _bars() as progress:
            yield progress
        return
    state: dict[str, Any] = {"phase": "", "done": 0, "next": 0.0}

    def phase(text: str, total: int | None = None) -> None:
        state.update(phase=text, done=0, next=time.monotonic() + LINE_EVERY)
        console.say(text + (f" ({_size(total)})" if total else ""))

    def advance(n: int) -> None:
        state["done"] += n
        if time.monotonic() >= state["next"]:
            state["next"] = time.monotonic() + LINE_EVERY
            console.say(f"{state['phase']}: {_size(state['done'])} so far")

    yield Progress(phase=phase, advance=advance)


@contextlib.contextmanager
def _bars() -> Iterator[Progress]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as Bars

    bars = Bars(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    current: dict[str, Any] = {"task": None}

    def phase(text: str, total: int | None = None) -> None:
        if current["task"] is not None:
            task = bars.tasks[-1]
            bars.update(current["task"], total=task.completed)
        current["task"] = bars.add_task(text, total=total)

    def advance(n: int) -> None:
        if current["task"] is not None:
            bars.advance(current["task"], n)

    with bars:
        yield Progress(phase=phase, advance=advance)
        if current["task"] is not None:
            bars.update(current["task"], total=bars.tasks[-1].completed)
