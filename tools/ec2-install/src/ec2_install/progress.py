"""Phases of a long run: a spinner with the elapsed time per phase on a terminal,
plain timestamped lines otherwise (the journal, CI logs)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol

from odbox_common import console


class Phases(Protocol):
    def phase(self, name: str, detail: str) -> contextlib.AbstractContextManager[None]: ...

    def say(self, line: str) -> None: ...


class Lines:
    """One line when a phase starts and one when it ends, with its duration."""

    def say(self, line: str) -> None:
        console.say(line)

    @contextlib.contextmanager
    def phase(self, name: str, detail: str) -> Iterator[None]:
        start = time.monotonic()
        console.say(f"{name}: {detail}")
        yield
        console.say(f"{name}: done in {time.monotonic() - start:.0f} s")


class Spinners:
    """A rich progress display: one row per phase, spinning until it ends."""

    def __init__(self) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            transient=False,
        )

    def __enter__(self) -> Spinners:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def say(self, line: str) -> None:
        self._progress.console.print(line, markup=False, highlight=False)

    @contextlib.contextmanager
    def phase(self, name: str, detail: str) -> Iterator[None]:
        task = self._progress.add_task(f"{name:<14} {detail}", total=1)
        try:
            yield
        except BaseException:
            self._progress.update(task, description=f"{name:<14} {detail}: failed")
            self._progress.stop_task(task)
            raise
        self._progress.update(task, completed=1)
        self._progress.stop_task(task)


@contextlib.contextmanager
def phases_for() -> Iterator[Phases]:
    if sys.stdout.isatty():
        with Spinners() as spinners:
            yield spinners
    else:
        yield Lines()
