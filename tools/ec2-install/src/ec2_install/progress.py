"""Phases of a long run: a spinner with the elapsed time per phase on a terminal,
plain timestamped lines otherwise (the journal, CI logs)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from odbox_common import console
from odbox_common.errors import ToolError


class Phases(Protocol):
    def phase(self, name: str, detail: str) -> contextlib.AbstractContextManager[None]: ...

    def say(self, line: str) -> None: ...


def say(line: str) -> None:
    """A line on stdout that cannot stop the run: once the reader has gone (`up | head`),
    stdout goes to /dev/null and the box is made all the same."""
    try:
        console.say(line)
    except BrokenPipeError:
        _stdout_to_devnull()


def write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    # What Python's documentation of SIGPIPE advises: later writes, and the flush at
    # exit, go nowhere instead of raising again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class Lines:
    """One line when a phase starts and one when it ends, with its duration."""

    def say(self, line: str) -> None:
        say(line)

    @contextlib.contextmanager
    def phase(self, name: str, detail: str) -> Iterator[None]:
        start = time.monotonic()
        say(f"{name}: {detail}")
        yield
        say(f"{name}: done in {time.monotonic() - start:.0f} s")


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
