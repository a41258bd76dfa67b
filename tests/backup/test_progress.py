"""Progress bars on a terminal; plain timestamped lines for the journal otherwise."""

from __future__ import annotations

import re

import pexpect

from tests.backup.helpers import ODBOX_BACKUP, backup_ok

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

    code, screen = _on_a_terminal(env, "restore", "--repo", repo, "latest", "--db", f"{name}_new",
                                  "--filestore", str(tmp_path / "new" / "filestore"))  # fmt: skip
    assert code == 0, screen
    assert "━" in screen and "restoring" in screen and "attachments verified" in screen
