"""Crash safety: `run` killed with SIGKILL at random moments loses nothing.

After every kill: `verify --read-data` passes, `list` shows only whole
snapshots, the lock left behind is recognised as stale (this host, a dead pid)
and the next `run` succeeds, deleting the temp files the killed one left. At
the end every snapshot verifies and a sample of them (the first, a middle one,
the last) restores to exactly the data it was taken from.

The kill is a real `kill -9` of the process group (odbox-backup and its
pg_dump, as systemd kills a service's cgroup), at moments drawn from a seeded
RNG over the measured duration of a run, one in each of N equal slices of it,
so that they fall all along it: before the lock is taken, while the database
is dumped and the filestore read, around the manifest and the lock's release.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from odbox_backup.locks import is_stale, read_locks
from odbox_backup.store import LocalStore
from tests.backup.conftest import moto_for
from tests.backup.helpers import ODBOX_BACKUP, backup, backup_ok, env_for, store_for
from tests.odoo_data import Shape, add_attachments, filestore_digest, fill, table_checksums

SEED = 20261122
TRIALS = {"local": 20, "s3": 6}
# How much of a run's measured work the kills span. Runs on moto vary more from one to the
# next (a growing bucket, a busy machine): aim at the part of the run that surely comes.
REACH = {"local": 1.0, "s3": 0.8}
# New attachments before each trial, so every run has files to read and store: a few large
# ones and many small ones (each small file is an object written on its own).
NEW_FILES = {(1 << 20, 3 << 20): 4, (1, 16 << 10): 20}


@dataclass
class Killed:
    delay: float
    phase: str  # the last progress line it printed: how far it got
    exit: int
    lock_left: bool
    temp_files: int
    new_snapshot: bool


def _state(dsn: str, filestore: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The data a snapshot must bring back: every table's checksum, every file's SHA-256."""
    with psycopg.connect(dsn) as conn:
        return table_checksums(conn), filestore_digest(filestore)


def _phase(output: str) -> str:
    """How far a run got: the first words of the last progress line it printed (stdout is
    not a terminal: one line a phase), "start" when it printed none."""
    lines = [line.split("odbox-backup: ", 1)[-1] for line in output.splitlines() if line.strip()]
    words = [w for w in lines[-1].split()[:2] if not any(c.isdigit() for c in w)] if lines else []
    return " ".join(words) or "start"


def _start(env: dict[str, str], args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`odbox-backup ARGS` in its own process group (with its pg_dump), output to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(ODBOX_BACKUP), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def _timeline(env: dict[str, str], args: list[str], log: Path) -> tuple[float, float, str]:
    """Run to the end, watching its output: when its first line came (it holds the lock and
    begins the work), when it ended, and the output."""
    started = time.monotonic()
    child = _start(env, args, log)
    began = None
    while began is None and child.poll() is None:
        if log.stat().st_size:
            began = time.monotonic() - started
        time.sleep(0.002)
    child.wait()
    ended = time.monotonic() - started
    output = log.read_text(errors="replace")
    assert child.returncode == 0, output
    return began or ended, ended, output


def _run_and_kill(
    env: dict[str, str], args: list[str], delay: float, log: Path
) -> tuple[int, int, str]:
    """Start `odbox-backup ARGS`, SIGKILL its process group after `delay` seconds, as
    systemd kills a service's cgroup; its pid, exit status and output."""
    child = _start(env, args, log)
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):  # it finished, pg_dump too
        os.killpg(child.pid, signal.SIGKILL)
    # Reap it: a zombie still answers kill(pid, 0), so its lock would look alive.
    code = child.wait(timeout=30)
    return child.pid, code, log.read_text(errors="replace")


def _verify_all(env: dict[str, str], repo: str) -> dict[str, Any]:
    result = backup(env, "verify", "--repo", repo, "--read-data", "--json")
    assert result.returncode == 0, f"verify after a kill:\n{result.stdout}\n{result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["ok"] and report["problems"] == []
    return report


def _listed(env: dict[str, str], repo: str) -> list[str]:
    """`list --json`: it reads every manifest, so each listed snapshot is readable."""
    return [row["id"] for row in json.loads(backup_ok(env, "list", "--repo", repo, "--json"))]


class Moments:
    """When to kill: one moment in each of N equal slices of a run, in a seeded random order.

    A quarter of the slices cover the start (Python, the lock, the previous manifest), the
    rest the work (the dump, the filestore, the manifest, the lock's release). The start is
    re-measured on every run that is let finish, the work was measured once.
    """

    def __init__(self, rng: random.Random, trials: int, work: float) -> None:
        early = max(1, trials // 4)
        self.slices = [("start", (i + rng.random()) / early) for i in range(early)]
        late = trials - early
        self.slices += [("work", (i + rng.random()) / late) for i in range(late)]
        rng.shuffle(self.slices)
        self.work = work
        self.starts: list[float] = []

    def measured(self, began: float) -> None:
        self.starts.append(began)

    def delay(self, number: int) -> float:
        start = statistics.median(self.starts[-5:])
        part, fraction = self.slices[number]
        return fraction * start if part == "start" else start + fraction * self.work


@pytest.mark.timeout(300)
def test_kill_9_at_random_moments_of_run_loses_nothing(
    postgres, odoo, backend, env, request, tmp_path
):
    name, dsn, filestore = odoo
    kind = "s3" if backend.startswith("s3://") else "local"
    rng = random.Random(f"{SEED}-{kind}")
    with psycopg.connect(dsn) as conn:  # a dump that takes a while, as long as the filestore
        fill(conn, filestore, Shape(partners=2000, messages=30000, attachments=0), seed=11)
    store = store_for(backend, moto_for(backend, request))
    run = ["run", "--repo", backend, "--db", name, "--filestore", str(filestore)]
    trials = TRIALS[kind]
    # Snapshot ID -> the data it was taken from, for the first, a middle and the last one.
    states: dict[str, tuple[dict[str, str], dict[str, str]] | None] = {}

    def snapshot_ids() -> list[str]:
        return sorted(key.rsplit("/", 1)[1] for key in store.list("snapshots"))

    def change() -> None:
        with psycopg.connect(dsn) as conn:
            for (low, high), count in NEW_FILES.items():
                add_attachments(conn, filestore, count, rng, Shape(0, 0, 0, ((1, low, high),)))
            conn.execute("UPDATE res_partner SET city = %s WHERE id = %s",
                         [f"trial {len(states)}", len(states) + 1])  # fmt: skip
            conn.commit()

    backup_ok(env, "init", "--repo", backend)
    backup_ok(env, *run)
    states[snapshot_ids()[-1]] = _state(dsn, filestore)
    # Measure runs that have as much to do as each trial's (new files, a changed table).
    timings = []
    for number in range(2):
        change()
        # A manifest's ID must name a later second than the last one's: start in a new
        # second, so the work measured is the run's own and not a wait for the clock.
        time.sleep(1.01 - time.time() % 1)
        timings.append(_timeline(env, run, tmp_path / f"measure-{number}.log"))
        states[snapshot_ids()[-1]] = None
    work = statistics.mean(ended - began for began, ended, _ in timings)
    moments = Moments(rng, trials, work * REACH[kind])
    for began, _, _ in timings:
        moments.measured(began)

    killed: list[Killed] = []
    before = _listed(env, backend)
    for number in range(trials):
        change()
        delay = moments.delay(number)
        pid, code, output = _run_and_kill(env, run, delay, tmp_path / f"kill-{number}.log")
        assert code in (-signal.SIGKILL, 0), output

        # What the kill left: nothing damaged, whole snapshots only, each readable.
        _verify_all(env, backend)
        after = _listed(env, backend)
        assert after[: len(before)] == before and len(after) - len(before) in (0, 1), output
        if len(after) > len(before):  # killed after its manifest was written: it is whole
            states[after[-1]] = None
        locks = read_locks(store)
        for lock in locks:  # the lock it left is the killed run's, and recognised as stale
            assert (lock.host, lock.pid) == (socket.gethostname(), pid), lock
            assert is_stale(lock), lock
        assert len(locks) <= 1 and not (locks and code == 0), locks
        temp = list(store.temp_files()) if isinstance(store, LocalStore) else []
        killed.append(Killed(round(delay, 3), _phase(output), code, bool(locks), len(temp),
                             len(after) > len(before)))  # fmt: skip

        # The next run goes on: it removes the stale lock and the temp files, and succeeds.
        began, _, output = _timeline(env, run, tmp_path / f"next-{number}.log")
        moments.measured(began)
        assert ("removed a stale lock" in output) == bool(locks), output
        assert list(store.list("locks")) == []
        if isinstance(store, LocalStore):
            assert list(store.temp_files()) == [], "the next writer deletes the temp files"
        before = snapshot_ids()
        assert len(before) == len(after) + 1
        states[before[-1]] = _state(dsn, filestore) if number in (trials // 2, trials - 1) else None

    phases = collections.Counter(k.phase for k in killed)
    print(f"\n{kind}: {trials} kills, by how far the run got: {dict(phases)}; "
          f"{sum(k.lock_left for k in killed)} left a lock, {sum(k.temp_files for k in killed)} "
          f"temp files, {sum(k.new_snapshot for k in killed)} a whole snapshot; delays "
          f"{min(k.delay for k in killed):.2f}-{max(k.delay for k in killed):.2f} s")  # fmt: skip
    # The kills hit runs before they took the lock and while they held it.
    assert sum(k.lock_left for k in killed) >= trials // 4, killed
    if trials >= 20:
        assert any(k.exit and not k.lock_left and not k.new_snapshot for k in killed), killed

    # Every snapshot is whole; the first, a middle one and the last restore to their data.
    ids = _listed(env, backend)
    assert ids == sorted(states)
    report = _verify_all(env, backend)
    assert len(report["snapshots"]) == len(ids)
    sample = [(i, snapshot, data) for i, (snapshot, data) in enumerate(sorted(states.items()))
              if data is not None]  # fmt: skip
    assert len(sample) == 3 and sample[0][0] == 0 and sample[-1][0] == len(ids) - 1
    for index, snapshot, data in sample:
        target_db = f"{name}_r{index}"
        target = tmp_path / f"restored-{index}" / "filestore"
        backup_ok(env, "restore", "--repo", backend, snapshot, "--db", target_db,
                  "--filestore", str(target))  # fmt: skip
        restored = _state(dsn.replace(f"dbname={name}", f"dbname={target_db}"), target)
        assert restored == data, f"snapshot {index} ({snapshot}) restored other data"


def test_the_next_writer_deletes_temp_files_but_not_a_lock_being_written(postgres, odoo, tmp_path):
    """What a kill mid-write leaves (FORMAT.md, "Atomic writes"), planted where a killed
    writer leaves it: the next run deletes every such file except the temp file of a lock
    another live process may be writing right now."""
    name, _, filestore = odoo
    env = env_for(postgres, None)
    repo = tmp_path / "repo"
    backup_ok(env, "init", "--repo", str(repo))
    backup_ok(env, "run", "--repo", str(repo), "--db", name, "--filestore", str(filestore))
    dead = subprocess.Popen(["sleep", "60"])
    dead.kill()
    dead.wait()
    host, live = socket.gethostname(), os.getpid()
    an_object = next(p for p in (repo / "objects").rglob("*") if p.is_file())
    planted = {
        an_object.with_name(f"{'ab' * 32}.tmp-0badf00d"): an_object.read_bytes()[:100],
        repo / "snapshots" / "20990101T000000Z-00000000.tmp-0badf00d": b"{",
        repo / "config.json.tmp-0badf00d": b"",
        repo / "locks" / f"{host}-{dead.pid}-00000000.json.tmp-0badf00d": b'{"ho',
    }
    being_written = repo / "locks" / f"{host}-{live}-11111111.json.tmp-0badf00d"
    (repo / "locks").mkdir(exist_ok=True)
    for path, data in {**planted, being_written: b'{"host"'}.items():
        path.write_bytes(data)
    report = json.loads(backup_ok(env, "verify", "--repo", str(repo), "--json"))
    assert report["ok"] and report["temp_files"] == 5

    out = backup(env, "run", "--repo", str(repo), "--db", name, "--filestore", str(filestore))
    assert out.returncode == 0, out.stderr
    assert [p for p in planted if p.exists()] == []
    assert list(LocalStore(repo).temp_files()) == [being_written]
    report = json.loads(backup_ok(env, "verify", "--repo", str(repo), "--read-data", "--json"))
    assert report["ok"] and report["temp_files"] == 1 and len(report["snapshots"]) == 2
