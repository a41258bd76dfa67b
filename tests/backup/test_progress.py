"""Progress bars on a terminal; plain timestamped lines for the journal otherwise."""

from __future__ import annotations

import re
import threading

import pexpect

from odbox_backup.backup import FirstPhaseTotal
from odbox_common.progress import Progress
from tests.backup.helpers import ODBOX_BACKUP, backup_ok
from tests.conftest import find_pg_bindir

JOURNAL_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2} odbox-backup: ")


def _on_a_terminal(env, *args):
    child = pexpect.spawn(str(ODBOX_BACKUP), list(args), env=env, timeout=120,
                          dimensions=(40, 160))  # fmt: skip
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before.decode(errors="replace")


def test_a_terminal_gets_bars_and_the_journal_gets_timestamped_lines(odoo, env, tmp_path):
    name, _, filestore = odoo
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    code, screen = _on_a_terminal(env, "run", "--repo", repo, "--db", name,
                                  "--filestore", str(filestore))  # fmt: skip
    assert code == 0, screen
    assert "━" in screen and "MiB" in screen  # rich's bar, with bytes done
    assert "dumping database" in screen and "reading filestore" in screen
    assert not JOURNAL_LINE.search(screen.replace("\r", "\n"))

    journal = backup_ok(env, "run", "--repo", repo, "--db", name, "--filestore", str(filestore))
    lines = journal.splitlines()
    assert len(lines) >= 3 and all(JOURNAL_LINE.match(line) for line in lines), journal
    assert "━" not in journal and "\r" not in journal
    # The first phase's line has its size: the last snapshot's dump and filestore.
    assert re.search(r"reading filestore \S+ \([\d.]+ [KMG]iB\)$", journal, re.M), journal

    code, screen = _on_a_terminal(env, "restore", "--repo", repo, "latest", "--db", f"{name}_new",
                                  "--filestore", str(tmp_path / "new" / "filestore"))  # fmt: skip
    assert code == 0, screen
    assert "━" in screen and "restoring" in screen and "attachments verified" in screen


def test_the_first_phase_of_a_run_gains_a_total_and_a_time_left_on_a_terminal(
    odoo, local_env, postgres, tmp_path
):
    """The dump and the filestore are read at once; the phase's total is the last snapshot's
    dump size and filestore bytes. pg_dump is held back (a wrapper waits for a file) until
    the screen shows the total and the time left, so no frame is missed by chance."""
    name, _, filestore = odoo
    repo = str(tmp_path / "repo")
    backup_ok(local_env, "init", "--repo", repo)
    backup_ok(local_env, "run", "--repo", repo, "--db", name, "--filestore", str(filestore))
    postgres.psql("CREATE TABLE moved AS SELECT 1 AS one", db=name)  # the WAL moves: a new dump
    held, release = tmp_path / "bin", tmp_path / "release"
    held.mkdir()
    (held / "pg_dump").write_text(
        "#!/bin/sh\n"
        f"for i in $(seq 1200); do [ -e {release} ] && break; sleep 0.1; done\n"
        f'exec {find_pg_bindir() / "pg_dump"} "$@"\n'
    )
    (held / "pg_dump").chmod(0o755)
    child = pexpect.spawn(str(ODBOX_BACKUP), ["run", "--repo", repo, "--db", name,
                          "--filestore", str(filestore), "--pg-bin", str(held)],
                          env=local_env, timeout=120, dimensions=(40, 400))  # fmt: skip
    child.expect(
        r"dumping database \S+ and reading filestore .* of [\d.]+ [KMG]iB.*ETA \d:\d\d:\d\d"
    )
    release.touch()
    child.expect(pexpect.EOF)
    child.close()
    screen = child.before.decode(errors="replace")
    assert child.exitstatus == 0, screen


class Recorded:
    """A Progress that keeps what it was told: the totals given and the bytes advanced."""

    def __init__(self) -> None:
        self.totals: list[int | None] = []
        self.done = 0
        self._given = threading.Condition()

    def progress(self) -> Progress:
        return Progress(phase=self._phase, advance=self._advance, total=self._total)

    def _phase(self, text: str, total: int | None = None) -> None:
        self._total(total)  # the phase's total when it starts: the first of the list

    def _advance(self, n: int) -> None:
        self.done += n

    def _total(self, n: int | None) -> None:
        with self._given:
            self.totals.append(n)
            self._given.notify_all()

    def wait_for(self, count: int) -> list[int | None]:
        """The totals once `count` have been given (the counter's come from its thread)."""
        with self._given:
            assert self._given.wait_for(lambda: len(self.totals) >= count, timeout=60)
            return list(self.totals)


def test_the_first_phase_total_is_the_last_snapshots_dump_and_filestore_until_outgrown(tmp_path):
    seen = Recorded()
    total = FirstPhaseTotal(seen.progress(), tmp_path, dump=100, filestore=50)
    total.start("dumping database shop and reading filestore /srv/filestore")
    assert seen.totals == [150]  # at once, no walk: the last snapshot's sizes
    total.filestore_progress.advance(50)
    total.dump_progress.advance(100)  # as big as last time: still the estimate
    assert seen.totals == [150]
    total.dump_progress.advance(1)  # bigger than last time: not known until it ends
    assert seen.totals == [150, None]
    total.dump_ended(130)
    assert seen.totals == [150, None, 180] and seen.done == 151
    total.close()
    total.dump_ended(140)  # after the phase: it would be the next phase's total
    assert seen.totals == [150, None, 180]


def test_without_a_last_snapshot_the_filestore_is_counted_and_the_dump_known_when_it_ends(
    tmp_path,
):
    for i, size in enumerate([10, 20, 30]):
        (tmp_path / f"{i:02x}").mkdir()
        (tmp_path / f"{i:02x}" / ("0" * 40)).write_bytes(b"x" * size)
    (tmp_path / "00" / "loop").symlink_to(tmp_path)  # a loop: each folder is counted once
    seen = Recorded()
    total = FirstPhaseTotal(seen.progress(), tmp_path, dump=None, filestore=None)
    total.start("dumping database shop and reading filestore /srv/filestore")
    total.dump_ended(1000)
    assert seen.wait_for(2) == [None, 1060]  # 1000 + the 60 bytes counted
    total.close()


def test_a_filestore_that_outgrew_the_last_snapshot_is_counted_then(tmp_path):
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / ("1" * 40)).write_bytes(b"x" * 500)
    seen = Recorded()
    total = FirstPhaseTotal(seen.progress(), tmp_path, dump=0, filestore=100)
    total.start("reading filestore /srv/filestore")
    total.filestore_progress.advance(101)
    assert seen.wait_for(3) == [100, None, 500]
    total.close()
