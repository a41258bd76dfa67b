"""The one progress display (odbox_common.progress), rendered: what a user sees of a phase
on a terminal and in the journal. A fake clock drives rich's speed and ETA, so nothing here
depends on how fast the machine is."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from odbox_common import progress as progress_module
from odbox_common.console import human_size
from odbox_common.progress import ByteRows, Spinners, journal_lines

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _console(width: int = 200) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, color_system=None, force_terminal=False), out


def _byte_rows() -> tuple[Clock, ByteRows]:
    """Rows on a console of their own, driven by a fake clock."""
    clock = Clock()
    return clock, ByteRows(_console()[0], clock)


def _rows_now(rows: ByteRows, width: int = 200) -> list[str]:
    """The rows as the terminal shows them at this moment, one string each."""
    console, out = _console(width)
    console.print(rows.display.make_tasks_table(rows.display.tasks))
    return [line.rstrip() for line in out.getvalue().splitlines() if line.strip()]


def test_a_phase_of_known_size_shows_done_of_total_speed_and_time_left_in_one_unit():
    clock, rows = _byte_rows()
    with rows as progress:
        progress.phase("restoring filestore", 10 * MiB)
        for _ in range(4):
            clock.now += 1
            progress.advance(MiB)
        (row,) = _rows_now(rows)
    assert "4.0 MiB of 10.0 MiB" in row
    assert "1.0 MiB/s" in row  # the sizes' unit, not rich's decimal MB/s
    assert "ETA 0:00:06" in row  # 6 MiB left at 1 MiB/s
    assert "?" not in row and "MB/s" not in row


def test_a_phase_of_unknown_size_shows_no_total_and_no_time_left():
    clock, rows = _byte_rows()
    with rows as progress:
        progress.phase("dumping database shop")
        clock.now += 2
        progress.advance(3 * MiB)
        (row,) = _rows_now(rows)
    assert "3.0 MiB" in row and " of " not in row and "ETA" not in row
    assert "1.5 MiB/s" in row  # one chunk so far: rich has no estimate, the average is shown


def test_no_question_mark_speed_and_no_empty_phase_is_left_on_screen_when_done():
    clock = Clock()
    console, out = _console()
    with ByteRows(console, clock) as progress:
        progress.phase("database shop unchanged since snapshot X: its dump is reused")
        clock.now += 1
        progress.phase("reading filestore /srv/filestore", 2 * MiB)
        clock.now += 1
        progress.advance(2 * MiB)  # in one chunk: rich's own speed column says `?`
        progress.phase("writing the snapshot manifest")
        clock.now += 1
    screen = out.getvalue()
    lines = [line for line in screen.splitlines() if line.strip()]
    assert len(lines) == 3, screen
    assert all("✓" in line for line in lines), screen  # every phase ends marked done
    assert "?" not in screen and "0/0" not in screen and "0 bytes" not in screen, screen
    reused, filestore, manifest = lines
    assert "MiB" not in reused and "/s" not in reused  # no sizes for a phase without bytes
    assert "2.0 MiB" in filestore and "2.0 MiB/s" in filestore and "of" not in filestore
    assert "ETA" not in screen  # nothing is left to wait for once done
    assert "MiB" not in manifest


def test_steps_show_a_spinner_then_a_mark_and_their_time_and_no_sizes():
    console, out = _console()
    with Spinners(console) as steps:
        with steps.phase("launch", "t4g.small in eu-west-1"):
            pass
        with pytest.raises(RuntimeError), steps.phase("status checks", "waiting"):
            raise RuntimeError("gone")
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert "✓" in lines[0] and "launch" in lines[0] and re.search(r"\d:\d\d:\d\d", lines[0])
    assert "status checks" in lines[1] and "failed" in lines[1]
    assert "B/s" not in out.getvalue() and "MiB" not in out.getvalue()


def test_the_journal_gets_a_line_a_phase_and_a_minute_with_the_total_and_time_left(
    monkeypatch, capsys
):
    clock = Clock()
    progress = journal_lines(clock)
    progress.phase("restoring filestore", 10 * MiB)
    clock.now += 30
    progress.advance(MiB)  # within the minute: no line
    clock.now += 30
    progress.advance(MiB)
    progress.phase("writing the snapshot manifest")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].endswith("restoring filestore (10.0 MiB)")
    assert lines[1].endswith(
        "restoring filestore: 2.0 MiB of 10.0 MiB so far, 34.1 KiB/s, about 240 s left"
    )
    assert lines[2].endswith("writing the snapshot manifest")
    assert progress_module.LINE_EVERY == 60.0


def test_a_total_that_comes_after_the_phase_started_gives_it_done_of_total_and_time_left():
    clock, rows = _byte_rows()
    with rows as progress:
        progress.phase("dumping database shop and reading filestore /srv/filestore")
        clock.now += 2
        progress.advance(2 * MiB)
        (row,) = _rows_now(rows)
        assert " of " not in row and "ETA" not in row
        progress.total(10 * MiB)  # the filestore has been counted
        clock.now += 2
        progress.advance(2 * MiB)
        (row,) = _rows_now(rows)
    assert "4.0 MiB of 10.0 MiB" in row and "1.0 MiB/s" in row
    assert "ETA 0:00:06" in row  # 6 MiB left at the phase's 1 MiB/s


def test_a_total_the_bytes_done_pass_is_dropped_rather_than_shown_as_done_while_it_runs():
    clock, rows = _byte_rows()
    with rows as progress:
        progress.phase("dumping database shop and reading filestore /srv/filestore", 2 * MiB)
        clock.now += 1
        progress.advance(3 * MiB)  # the database grew since the estimate
        (row,) = _rows_now(rows)
        assert "3.0 MiB" in row and " of " not in row and "ETA" not in row
        assert "✓" not in row  # rich would have called the row finished at its total
        progress.total(6 * MiB)  # the dump ended: now it is known
        (row,) = _rows_now(rows)
        assert "3.0 MiB of 6.0 MiB" in row and "ETA 0:00:01" in row
        progress.total(None)
        (row,) = _rows_now(rows)
        assert " of " not in row and "ETA" not in row


def test_a_total_given_before_any_phase_changes_nothing():
    clock = Clock()
    console, out = _console()
    with ByteRows(console, clock) as progress:
        progress.total(5 * MiB)  # no phase yet
        progress.phase("writing the snapshot manifest")
    assert "MiB" not in out.getvalue()


def test_the_journal_line_of_a_phase_shows_the_total_and_time_left_once_given(capsys):
    clock = Clock()
    progress = journal_lines(clock)
    progress.phase("dumping database shop and reading filestore /srv/filestore")
    clock.now += 30
    progress.advance(MiB)
    progress.total(10 * MiB)
    clock.now += 30
    progress.advance(MiB)
    progress.total(MiB)  # passed by the bytes done: an estimate, not shown
    clock.now += 60
    progress.advance(MiB)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].endswith("dumping database shop and reading filestore /srv/filestore")
    assert lines[1].endswith(": 2.0 MiB of 10.0 MiB so far, 34.1 KiB/s, about 240 s left")
    assert lines[2].endswith(": 3.0 MiB so far, 25.6 KiB/s")


def test_a_phase_that_waits_shows_its_speed_falling_not_its_last_burst():
    clock, rows = _byte_rows()
    with rows as progress:
        progress.phase("dumping database shop and reading filestore /srv/filestore", 100 * MiB)
        for _ in range(8):  # the filestore's unchanged files, a folder at a time
            clock.now += 0.125
            progress.advance(5 * MiB)
        clock.now += 39  # pg_dump waits on a lock
        (row,) = _rows_now(rows)
    assert "40.0 MiB of 100.0 MiB" in row
    assert "1.0 MiB/s" in row and "ETA 0:01:00" in row  # rich's own: 40 MiB/s, 0:00:02


def test_the_speed_is_of_the_last_30_seconds_when_the_phase_slows_down():
    clock, rows = _byte_rows()
    with rows as progress:
        progress.phase("dumping database shop and reading filestore /srv/filestore", 200 * MiB)
        for _ in range(10):  # the dump: 10 MiB/s
            clock.now += 1
            progress.advance(10 * MiB)
        for _ in range(40):  # then small files: 1 MiB/s
            clock.now += 1
            progress.advance(MiB)
        (row,) = _rows_now(rows)
    assert "140.0 MiB of 200.0 MiB" in row
    assert "1.0 MiB/s" in row and "ETA 0:01:00" in row  # the average would say 2.8 MiB/s


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
     ((1 << 20) - 1, "1.0 MiB"), ((1 << 20) - 60, "1023.9 KiB"), (20 << 20, "20.0 MiB"),
     ((1 << 30) - 1, "1.0 GiB"), (5 << 40, "5120.0 GiB")],
)  # fmt: skip
def test_a_size_is_in_the_largest_unit_it_is_under_1024_of_as_printed(n, text):
    """A size or speed just under a unit was `1024.0 KiB/s` on a row; it is `1.0 MiB/s`."""
    assert human_size(n) == text


def test_on_a_narrow_terminal_the_text_wraps_and_the_sizes_speed_and_time_left_stay_whole():
    """Seen on an 80-column terminal: `144.0 MiB of  1.5 GiB/s ETA 0:00:01`, the total cut off
    because every column was squeezed alike. The phase's text is what gives way."""
    clock, rows = _byte_rows()
    with rows as progress:
        progress.phase("dumping database shop and reading filestore /var/lib/odoo/filestore/shop",
                       272 * MiB)  # fmt: skip
        for _ in range(4):
            clock.now += 1
            progress.advance(36 * MiB)
        shown = " ".join(_rows_now(rows, width=80))
    assert "144.0 MiB of 272.0 MiB" in shown
    assert "36.0 MiB/s" in shown and "ETA 0:00:04" in shown
    assert "/var/lib/odoo/filestore/shop" in "".join(shown.split())  # wrapped, not cut
