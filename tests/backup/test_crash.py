"""Crash safety: `run` killed with SIGKILL at any step loses nothing.

After every kill: `verify --read-data` passes, `list` shows only whole
snapshots, the lock left behind is recognised as stale (this host, a dead pid)
and the next `run` succeeds, deleting the temp files the killed one left. At
the end every snapshot verifies and a sample of them (the first, a middle one,
the last) restores to exactly the data it was taken from.

The kill is a real `kill -9` of the process group (odbox-backup and its
pg_dump, as systemd kills a service's cgroup), at chosen steps, not after a
time: tests/backup/killpoints/sitecustomize.py, put on the child's PYTHONPATH,
counts the calls of the store (get, put, delete, a local rename) and of the
dump's read loop and kills the group just before or after the Nth one. A run
let finish with the counting on gives N for "the middle" and "the last"; every
step of the table below is killed once, and what it leaves is known exactly.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from odbox_backup.locks import is_stale, read_locks
from odbox_backup.store import LocalStore
from tests.backup.conftest import moto_for
from tests.backup.helpers import ODBOX_BACKUP, backup, backup_ok, env_for, store_for
from tests.backup.killpoints import counted, with_killpoints
from tests.odoo_data import Shape, add_attachments, filestore_digest, fill, table_checksums

SEED = 20261122
# New attachments before each trial, so every run has files to read and store: a few large
# ones (objects of their own) and many small ones (into packs).
NEW_FILES = {(1 << 20, 3 << 20): 4, (1, 16 << 10): 20}


@dataclass(frozen=True)
class Step:
    """Kill just `when` the `which` call of `step` (first, middle or last of the calls a
    finished run made); what must be left: a stale lock, a new whole snapshot, temp files
    (local store only)."""

    step: str
    which: str
    when: str
    lock_left: bool
    new_snapshot: bool
    temp_files: bool = False
    local_only: bool = False

    def kill_at(self, calls: int) -> str:
        number = {"first": 1, "middle": max(1, calls // 2), "last": calls}[self.which]
        return f"{self.step}:{number}:{self.when}"

    def __str__(self) -> str:
        return f"{self.when} the {self.which} {self.step}"


# A run's steps in order: the repository opened, the lock taken, the dump and the filestore
# stored (their objects, packs and indexes: written by two threads, in any order), the
# manifest, the lock released.
STEPS = [
    Step("get:config.json", "first", "before", lock_left=False, new_snapshot=False),
    Step("put:locks", "first", "before", lock_left=False, new_snapshot=False),
    Step("rename:locks", "first", "before", lock_left=False, new_snapshot=False,
         temp_files=True, local_only=True),
    Step("put:locks", "first", "after", lock_left=True, new_snapshot=False),
    Step("dump:read", "first", "after", lock_left=True, new_snapshot=False),
    Step("dump:read", "last", "after", lock_left=True, new_snapshot=False),
    Step("put:objects", "first", "before", lock_left=True, new_snapshot=False),
    Step("rename:objects", "middle", "before", lock_left=True, new_snapshot=False,
         temp_files=True, local_only=True),
    Step("put:objects", "last", "after", lock_left=True, new_snapshot=False),
    Step("put:packs", "first", "after", lock_left=True, new_snapshot=False),
    Step("put:index", "last", "after", lock_left=True, new_snapshot=False),
    Step("put:snapshots", "first", "before", lock_left=True, new_snapshot=False),
    Step("rename:snapshots", "first", "before", lock_left=True, new_snapshot=False,
         temp_files=True, local_only=True),
    Step("put:snapshots", "first", "after", lock_left=True, new_snapshot=True),
    Step("delete:locks", "last", "before", lock_left=True, new_snapshot=True),
    Step("delete:locks", "last", "after", lock_left=False, new_snapshot=True),
]  # fmt: skip


def _state(dsn: str, filestore: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The data a snapshot must bring back: every table's checksum, every file's SHA-256."""
    with psycopg.connect(dsn) as conn:
        return table_checksums(conn), filestore_digest(filestore)


def _run(env: dict[str, str], args: list[str], log: Path) -> tuple[int, int, str]:
    """`odbox-backup ARGS` in its own process group (with its pg_dump), output to `log`, as
    systemd runs a service in its cgroup; its pid, exit status and output."""
    with log.open("wb") as out:
        child = subprocess.Popen(
            [str(ODBOX_BACKUP), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    # Reap it: a zombie still answers kill(pid, 0), so its lock would look alive.
    code = child.wait(timeout=240)
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


@pytest.mark.timeout(600)
def test_kill_9_at_every_step_of_run_loses_nothing(postgres, odoo, backend, env, request, tmp_path):
    name, dsn, filestore = odoo
    kind = "s3" if backend.startswith("s3://") else "local"
    rng = random.Random(f"{SEED}-{kind}")
    with psycopg.connect(dsn) as conn:  # a dump of many reads
        fill(conn, filestore, Shape(partners=2000, messages=30000, attachments=0), seed=11)
    store = store_for(backend, moto_for(backend, request))
    run = ["run", "--repo", backend, "--db", name, "--filestore", str(filestore)]
    steps = [s for s in STEPS if kind == "local" or not s.local_only]
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
    # How many calls of each step a run makes that has as much to do as each trial's (new
    # files, a changed table): the fewest of two runs, so every kill point is reached.
    calls: dict[str, int] = {}
    for number in range(2):
        change()
        counts = tmp_path / f"counts-{number}.json"
        _, code, output = _run(with_killpoints(env, count_to=counts), run,
                               tmp_path / f"measure-{number}.log")  # fmt: skip
        assert code == 0, output
        calls = {k: min(v, calls.get(k, v)) for k, v in counted(counts).items()}
        states[snapshot_ids()[-1]] = None
    assert all(calls.get(s.step, 0) >= 1 for s in steps), calls
    print(f"\n{kind}: calls of a run: {calls}")

    before = _listed(env, backend)
    for number, step in enumerate(steps):
        change()
        kill_env = with_killpoints(env, kill_at=step.kill_at(calls[step.step]))
        pid, code, output = _run(kill_env, run, tmp_path / f"kill-{number}.log")
        assert code == -signal.SIGKILL, f"{step}: not killed\n{output}"

        # What the kill left: nothing damaged, whole snapshots only, each readable.
        _verify_all(env, backend)
        after = _listed(env, backend)
        assert after[: len(before)] == before, step
        assert len(after) - len(before) == step.new_snapshot, f"{step}: {after}"
        if step.new_snapshot:  # killed after its manifest was written: it is whole
            states[after[-1]] = None
        locks = read_locks(store)
        assert len(locks) == step.lock_left, f"{step}: {locks}"
        for lock in locks:  # the lock it left is the killed run's, and recognised as stale
            assert (lock.host, lock.pid) == (socket.gethostname(), pid), lock
            assert is_stale(lock), lock
        if isinstance(store, LocalStore):
            assert bool(list(store.temp_files())) == step.temp_files, step

        # The next run goes on: it removes the stale lock and the temp files, and succeeds.
        _, code, output = _run(env, run, tmp_path / f"next-{number}.log")
        assert code == 0, output
        assert ("removed a stale lock" in output) == step.lock_left, output
        assert list(store.list("locks")) == []
        if isinstance(store, LocalStore):
            assert list(store.temp_files()) == [], "the next writer deletes the temp files"
        before = snapshot_ids()
        assert len(before) == len(after) + 1
        last = number == len(steps) - 1
        states[before[-1]] = _state(dsn, filestore) if number == len(steps) // 2 or last else None

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
