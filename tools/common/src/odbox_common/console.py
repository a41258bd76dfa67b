"""Output: rich tables on a terminal, plain timestamped lines otherwise (journald), or JSON.

Every line written off a terminal starts with an ISO time and the program name,
so a failure at 2 AM reads as one self-contained journal line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

_program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "odbox"


def set_program(name: str) -> None:
    """The name every line is prefixed with (the tool's executable name)."""
    global _program
    _program = name


def count_of(count: int, word: str, plural: str | None = None) -> str:
    """`1 object`, `2 objects`, `0 objects`; `plural` where adding an s is wrong
    (`count_of(n, "copy", "copies")`)."""
    return f"{count} {word if count == 1 else plural or word + 's'}"


def human_size(n: float) -> str:
    """`512 B`, `1.5 KiB`, `20.0 MiB`, `3.2 GiB`."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        digits = 0 if unit == "B" else 1
        # Compared as printed: 1,048,575 bytes is `1.0 MiB`, not `1024.0 KiB`.
        if round(size, digits) < 1024 or unit == "GiB":
            return f"{size:.{digits}f} {unit}"
        size /= 1024
    return f"{n} B"


def _timestamp() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def is_terminal(stream: TextIO) -> bool:
    return stream.isatty()


_logs_on_stderr = False


@contextlib.contextmanager
def json_output(on: bool = True) -> Iterator[None]:
    """Under `--json`, stdout carries the one document: every line `say` (and progress)
    writes goes to stderr meanwhile. A command enters it with `ctx.with_resource(...)`."""
    global _logs_on_stderr
    before, _logs_on_stderr = _logs_on_stderr, on
    try:
        yield
    finally:
        _logs_on_stderr = before


def log_stream() -> TextIO:
    """Where lines of progress go: stdout, or stderr inside `json_output()`."""
    return sys.stderr if _logs_on_stderr else sys.stdout


def say(message: str, stream: TextIO | None = None) -> None:
    """One line of progress or result (on `log_stream()` unless told)."""
    stream = stream or log_stream()
    if is_terminal(stream):
        stream.write(message + "\n")
    else:
        stream.write(f"{_timestamp()} {_program}: {message}\n")
    stream.flush()


def error(message: str) -> None:
    """The one line a failure leaves, on stderr (and in the journal)."""
    prefix = "" if is_terminal(sys.stderr) else f"{_timestamp()} "
    sys.stderr.write(f"{prefix}{_program}: error: {message}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    """A line that does not end the command, on stderr."""
    prefix = "" if is_terminal(sys.stderr) else f"{_timestamp()} "
    sys.stderr.write(f"{prefix}{_program}: warning: {message}\n")
    sys.stderr.flush()


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if is_terminal(sys.stdout):
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, title_justify="left")
        for column in columns:
            t.add_column(column)
        for row in rows:
            t.add_row(*row)
        Console().print(t)
        return
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    say(title)
    for row in [list(columns), *rows]:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        sys.stdout.write("\n")
    sys.stdout.flush()
