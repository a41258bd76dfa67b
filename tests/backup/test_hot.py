"""Hot backup: Odoo keeps adding attachments during the backup, and no snapshot misses a file.

A separate writer process does what Odoo does for every new attachment, as fast
as it can: write the file into the filestore, then insert the `ir_attachment`
row that names it and commit. Backups taken meanwhile dump the database first
and read the filestore after, so every `store_fname` in a snapshot's dump has
its file in the same snapshot: the restore's own check finds them all, and so
does this test, against the snapshot's manifest.

That the writer writes during the backup is not left to timing: each run pauses
(tests/backup/killpoints) before it opens the repository, and again after its
first read of pg_dump's output (the filestore being read meanwhile), until the
writer has committed more attachments.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg
import pytest

from tests.backup.helpers import ODBOX_BACKUP, backup_ok, show
from tests.backup.killpoints import wait_for_pause, with_killpoints
from tests.odoo_data import store_fnames

BACKUPS = 3
# Between two attachments: about fifty a second, a busy Odoo's worth and more, so the
# filestore grows during every phase of a run without outrunning the backup.
PAUSE = 0.02

# Odoo's order: the file is on disk before the row that names it is committed.
WRITER = r"""
import hashlib, os, sys, time
import psycopg

dsn, filestore, stop, pause = sys.argv[1:]
written = 0
with psycopg.connect(dsn) as conn:
    while not os.path.exists(stop):
        content = os.urandom(1 + int.from_bytes(os.urandom(2), "big") % 16384)
        checksum = hashlib.sha1(content).hexdigest()
        store_fname = f"{checksum[:2]}/{checksum}"
        path = os.path.join(filestore, store_fname)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
        conn.execute(
            "INSERT INTO ir_attachment (name, res_model, res_id, mimetype, store_fname,"
            " checksum, file_size) VALUES (%s, 'res.partner', 1, 'application/octet-stream',"
            " %s, %s, %s)",
            [f"hot-{written}.bin", store_fname, checksum, len(content)],
        )
        conn.commit()
        written += 1
        time.sleep(float(pause))
print(written)
"""


def _run_while_writing(env, backend, odoo, tmp_path, number: int) -> None:
    """`run`, paused at its start and during its dump until the writer has added five
    attachments each time."""
    name, dsn, filestore = odoo
    pauses = {"get:config.json:1:before": tmp_path / f"start-{number}",
              "dump:read:1:after": tmp_path / f"dump-{number}"}  # fmt: skip
    child = subprocess.Popen(
        [str(ODBOX_BACKUP), "run", "--repo", backend, "--db", name, "--filestore", str(filestore)],
        env=with_killpoints(env, pause_at=pauses), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for release in pauses.values():
        wait_for_pause(release, child)
        target, deadline = _attachments(dsn) + 5, time.monotonic() + 60
        while _attachments(dsn) < target:
            assert time.monotonic() < deadline, "the writer stopped"
            time.sleep(0.02)
        release.touch()
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0, err


def _attachments(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM ir_attachment").fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.timeout(180)
def test_every_attachment_a_hot_snapshot_names_is_in_it(postgres, odoo, backend, env, tmp_path):
    name, dsn, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    at_start = _attachments(dsn)
    stop = tmp_path / "stop-writing"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, dsn, str(filestore), str(stop), str(PAUSE)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    backups = []
    try:
        deadline = time.monotonic() + 30
        while _attachments(dsn) < at_start + 50:  # the writer is going
            assert writer.poll() is None and time.monotonic() < deadline, "the writer stopped"
            time.sleep(0.05)
        for number in range(BACKUPS):
            before = _attachments(dsn)
            _run_while_writing(env, backend, odoo, tmp_path, number)
            after = _attachments(dsn)
            backups.append((before, after, show(env, backend, "latest")))
    finally:
        stop.touch()
        written, err = writer.communicate(timeout=30)
    assert writer.returncode == 0, err
    counts = []
    for number, (before, after, manifest) in enumerate(backups):
        assert after > before, "the writer added no attachment during the backup"
        restored_db = f"{name}_hot{number}"
        restored = tmp_path / f"hot-{number}" / "filestore"
        out = backup_ok(env, "restore", "--repo", backend, manifest["id"], "--db", restored_db,
                        "--filestore", str(restored))  # fmt: skip
        with psycopg.connect(dsn.replace(f"dbname={name}", f"dbname={restored_db}")) as conn:
            named = store_fnames(conn)
        dumped = _attachments(dsn.replace(f"dbname={name}", f"dbname={restored_db}"))
        # The dump holds rows the writer committed while this backup ran...
        assert before < dumped <= after, (before, dumped, after)
        counts.append(f"{before} < {dumped} < {after}")
        # ...and the snapshot holds the file of every one of them: restore checked it, and
        # so does the manifest, without the restore's help.
        assert f"{len(named)} attachments verified" in out
        in_snapshot = {f["path"] for f in manifest["filestore"]["files"]}
        assert named - in_snapshot == set()
        for fname in named:
            assert (restored / fname).read_bytes() == (filestore / fname).read_bytes()
    print(f"\nthe writer added {int(written)} attachments; rows when each backup began, "
          f"in its dump, when it ended: {'; '.join(counts)}")  # fmt: skip
