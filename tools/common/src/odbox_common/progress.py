"""Progress for every Odoo Box tool: rows on a terminal, plain timestamped lines otherwise.

Two ways to report, one display:

- `Progress` (phases that move bytes): `phase(text, total=None)` starts the next phase,
  `advance(n)` counts its bytes and `total(n)` gives the running phase its total once it is
  known (None: not known after all). odbox-backup's run, restore, verify, export and import,
  and k8s-migrate's pull use it, through `progress_for()`. All three may be called from
  any thread.
- `Phases` (steps that take time): `with phases.phase(name, detail):` is one row per step.
  ec2-install uses it, through `phases_for()`.

On a terminal each phase is a rich row: a spinner (a ✓ once done), its text, and for one
that moves bytes a bar, the bytes done (and the total when known), the speed, the time left
(when the total is known) and the time taken. Sizes and speed are in the same binary units
(`human_size`: KiB, MiB, MiB/s). A speed is shown only once there is one, never `?`, and a
phase that moved no bytes shows no sizes at all (no `0/0`). A total may come after the phase
started (odbox-backup's run counts the filestore while it reads it); one the bytes done pass
was an estimate, and the phase shows no total until it is given a new one, rather than a
full bar and a time left of nothing while it goes on. Off a terminal (the journal), a phase
is one line when it starts and, while it lasts, one line a minute (with the total and the
time left once the total is known), so a 2 AM journal shows where a slow run was without
drowning in lines.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from odbox_common import console
from odbox_common.console import human_size

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as Display
    from rich.progress import Task

LINE_EVERY = 60.0  # seconds between the journal's lines of one phase
SPEED_WINDOW = 30.0  # seconds of a row's speed (rich's own estimate's period)


@dataclass
class Progress:
    """Callbacks for a terminal's rows or the journal's lines (the default: nothing)."""

    phase: Callable[..., None] = lambda text, total=None: None  # (text, total bytes or None)
    advance: Callable[[int], None] = lambda _: None
    total: Callable[[int | None], None] = lambda _: None  # the running phase's, once known


class Phases(Protocol):
    def phase(self, name: str, detail: str) -> contextlib.AbstractContextManager[None]: ...

    def say(self, line: str) -> None: ...


# ------------------------------------------------------------------ lines that cannot fail


def say(line: str) -> None:
    """A line on stdout that cannot stop the run: once the reader has gone (`up | head`),
    stdout goes to /dev/null and the work goes on all the same."""
    try:
        console.say(line)
    except BrokenPipeError:
        _stdout_to_devnull()


def write(text: str) -> None:
    try:
        console.log_stream().write(text)
        console.log_stream().flush()
    except BrokenPipeError:
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    # What Python's documentation of SIGPIPE advises: later writes, and the flush at
    # exit, go nowhere instead of raising again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# ------------------------------------------------------------------ what a row shows


def moved_bytes(task: Task) -> bool:
    """Whether a row is about bytes: it was given a total, or some were counted."""
    return bool(task.fields.get("known_total")) or task.completed > 0


def size_text(task: Task) -> str:
    """`3.0 MiB of 10.0 MiB` (total known, not done), `10.0 MiB`, or nothing."""
    if not moved_bytes(task):
        return ""
    done = human_size(task.completed)
    if task.fields.get("known_total") and not task.finished and task.total is not None:
        return f"{done} of {human_size(task.total)}"
    return done


def speed_of(task: Task) -> float | None:
    """Bytes a second over the last SPEED_WINDOW seconds up to now (done: the phase's
    average); None until there is one. Not rich's estimate: it is of the time between the
    samples of its last 30 s, so it stays where it was while nothing moves (a dump waiting
    on a lock showed 547 MiB/s and `ETA 0:00:01` for as long as it waited), and is None after
    a single chunk or a new total (rich's own column shows `?`). restic's, too, counts the
    time up to now. A row without samples (not ByteRows') gets the phase's average."""
    if not moved_bytes(task) or task.completed == 0 or not task.elapsed:
        return None
    samples = task.fields.get("samples")
    if not task.finished and samples:
        since, done = samples[0]
        now: float = task.get_time()
        if now > since and task.completed > done:
            return (task.completed - float(done)) / (now - float(since))
    return task.completed / task.elapsed or None


def speed_text(task: Task) -> str:
    """`1.2 MiB/s` in the sizes' unit; nothing until a speed is known."""
    speed = speed_of(task)
    return f"{human_size(speed)}/s" if speed else ""


def eta_text(task: Task) -> str:
    """`ETA 0:01:05` while a phase of known total runs and a speed is known; else nothing."""
    if task.finished or not task.fields.get("known_total") or task.total is None:
        return ""
    speed = speed_of(task)
    if not speed or task.completed >= task.total:
        return ""
    seconds = math.ceil((task.total - task.completed) / speed)
    return f"ETA {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _display(console_: Console | None = None, clock: Callable[[], float] | None = None) -> Display:
    """The one rich display every tool's terminal progress is."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as Display
    from rich.table import Column
    from rich.text import Text

    class Bar(BarColumn):
        def render(self, task: Task) -> Any:
            return super().render(task) if moved_bytes(task) else Text("")

    class Of(ProgressColumn):
        def __init__(self, text: Callable[[Task], str], style: str) -> None:
            # Never wrapped: on a narrow terminal the phase's text wraps instead, where rich
            # squeezed every column alike and cut `144.0 MiB of 272.7 MiB` to `144.0 MiB of`.
            super().__init__(table_column=Column(no_wrap=True))
            self._text, self._style = text, style

        def render(self, task: Task) -> Text:
            return Text(self._text(task), style=self._style)

    return Display(
        SpinnerColumn(finished_text="[green]✓"),
        TextColumn("{task.description}", table_column=Column(overflow="fold")),
        Bar(bar_width=None, table_column=Column(min_width=10, max_width=40)),
        Of(size_text, "progress.download"),
        Of(speed_text, "progress.data.speed"),
        Of(eta_text, "progress.remaining"),
        TimeElapsedColumn(table_column=Column(no_wrap=True)),
        console=console_ or Console(stderr=True),
        transient=False,
        get_time=clock,
    )


# ------------------------------------------------------------------ byte phases


@contextlib.contextmanager
def progress_for(json_output: bool = False, stream: TextIO | None = None) -> Iterator[Progress]:
    """A Progress whose `phase(text, total)` starts a new row (or line): rows when `stream`
    (stderr) is a terminal, lines on stdout otherwise, nothing under --json."""
    if json_output:
        yield Progress()
        return
    if (stream or sys.stderr).isatty():
        with ByteRows() as progress:
            yield progress
        return
    yield journal_lines()


def journal_lines(clock: Callable[[], float] = time.monotonic) -> Progress:
    """A line when a phase starts (with its size when known), and one a minute after (with
    the total and the time left once the total is known and not passed)."""
    state: dict[str, Any] = {"phase": "", "done": 0, "total": None, "start": 0.0, "next": 0.0}
    lock = threading.Lock()  # advance comes from the dump's thread and the filestore's at once

    def phase(text: str, total: int | None = None) -> None:
        with lock:
            now = clock()
            state.update(phase=text, done=0, total=total, start=now, next=now + LINE_EVERY)
        console.say(text + (f" ({human_size(total)})" if total else ""))

    def set_total(total: int | None) -> None:
        with lock:
            state["total"] = total

    def advance(n: int) -> None:
        with lock:
            state["done"] += n
            now = clock()
            if now < state["next"]:
                return
            state["next"] = now + LINE_EVERY
            done, total = state["done"], state["total"]
            if total is not None and done > total:
                total = None  # an estimate the phase has passed: no total rather than a wrong one
            speed = done / (now - state["start"]) if now > state["start"] else 0
            line = f"{state['phase']}: {human_size(done)}"
            line += f" of {human_size(total)}" if total else ""
            line += f" so far, {human_size(speed)}/s" if speed else " so far"
            if total and speed and total > done:
                line += f", about {(total - done) / speed:.0f} s left"
        console.say(line)

    return Progress(phase=phase, advance=advance, total=set_total)


class ByteRows:
    """Rows on the terminal: each phase ends (its bar full, its speed the average) when the
    next starts, and the last when the work is done."""

    def __init__(self, console_: Console | None = None, clock: Callable[[], float] | None = None):
        self.display = _display(console_, clock)
        self._task: Any = None
        self._row: Task | None = None  # the running phase's row (rich's Task: its total)
        self._samples: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()  # advance and total come from worker threads

    def __enter__(self) -> Progress:
        self.display.start()
        return Progress(phase=self.phase, advance=self.advance, total=self.total)

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._finish()
        self.display.stop()

    def _finish(self) -> None:
        if self._row is not None:
            self.display.update(self._task, total=self._row.completed)
            self.display.stop_task(self._task)

    def phase(self, text: str, total: int | None = None) -> None:
        with self._lock:
            self._finish()
            # (time, bytes done) from the window's start on, for speed_of; the first is the
            # phase's start.
            self._samples = deque([(self.display.get_time(), 0.0)])
            self._task = self.display.add_task(
                text, total=total, known_total=bool(total), samples=self._samples
            )
            self._row = next(task for task in self.display.tasks if task.id == self._task)

    def total(self, total: int | None) -> None:
        with self._lock:
            if self._row is None:
                return
            if total is None or total < self._row.completed:
                self._unknown(self._row)
            else:
                self.display.update(self._task, total=total, known_total=True)

    def advance(self, n: int) -> None:
        with self._lock:
            row = self._row
            if row is None:
                return
            if (
                row.fields.get("known_total")
                and row.total is not None
                and row.completed + n > row.total
            ):
                # An estimate passed: rich would call the row finished (a ✓ while it runs).
                self._unknown(row)
            self.display.advance(self._task, n)
            now, samples = self.display.get_time(), self._samples
            samples.append((now, row.completed))
            while len(samples) > 2 and samples[1][0] <= now - SPEED_WINDOW:
                samples.popleft()  # the first left is the last at or before the window's start

    def _unknown(self, row: Task) -> None:
        # rich's update() takes None as "no change": the row's total is set on the row itself
        # (a public field of rich's Task), as add_task(total=None) leaves it.
        row.total = None
        row.finished_time = None
        self.display.update(self._task, known_total=False)


# ------------------------------------------------------------------ timed steps


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
    """Rows on the terminal, one per phase, spinning until it ends."""

    def __init__(self, console_: Console | None = None) -> None:
        from rich.console import Console

        self._progress = _display(console_ or Console())

    def __enter__(self) -> Spinners:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def say(self, line: str) -> None:
        self._progress.console.print(line, markup=False, highlight=False)

    @contextlib.contextmanager
    def phase(self, name: str, detail: str) -> Iterator[None]:
        task = self._progress.add_task(f"{name:<14} {detail}", total=None)
        try:
            yield
        except BaseException:
            self._progress.update(task, description=f"{name:<14} {detail}: failed")
            self._progress.stop_task(task)
            raise
        self._progress.update(task, total=0)
        self._progress.stop_task(task)


@contextlib.contextmanager
def phases_for() -> Iterator[Phases]:
    """Spinners on a terminal, else lines; on stderr under `console.json_output()`."""
    stream = console.log_stream()
    if stream.isatty():
        from rich.console import Console

        with Spinners(Console(file=stream)) as spinners:
            yield spinners
    else:
        yield Lines()
