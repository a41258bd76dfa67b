"""odbox-backup side by side with the raw floor, the seed's scripts and restic, on Odoo-shaped data.

Issue 4. The dataset is about 1 GB of database and 1 GB of filestore in about
20,000 files (tests/odoo_data.py: `Shape.scaled` for the filestore and the
rows, more `mail_message` rows until the database has the size asked for).
Four ways to back it up, each into its own target under the work folder:

- floor: `pg_dump -Fc` to a file, and `tar | zstd` of the filestore (every
  backup is a new pair of files, so its "repository" grows by a full copy);
- seed: `pg_dump` to plain SQL and `rsync -a --delete` to a mirror (one copy,
  overwritten every time: no history);
- restic (Debian's): `pg_dump -Fc -Z0 | restic backup --stdin` and `restic
  backup` of the filestore (uncompressed dump, so restic can dedup and compress
  it itself: restic at its best);
- odbox-backup with its defaults, unencrypted, and encrypted to an age key
  (restic always encrypts). The encrypted run is given no identity, as on the
  box (README: the box encrypts to public keys only): it cannot read the
  previous manifest, only what its local cache kept, if the version measured
  has one (`ODBOX_BACKUP_CACHE` points into the work folder). With
  `--odbox-identity-row` a third row runs encrypted with `--identity`.

Steps, in this order, every way on the same data before the data changes
(round-robin): a full backup; a second one with no change; a third one after a
write to another database of the cluster (Odoo's data unchanged, but the WAL
moved, as it always does on a box where Odoo runs: odbox-backup skips the dump
of a database only while the WAL stays where it was); five times "1 % churn"
(new attachments, files and `ir_attachment` rows, for 1 % of the files, and
1 % more `mail_message` rows) each followed by a backup; a restore of the
latest backup into a new database and folder. restic's and odbox-backup's full
and no-change backups are taken `--repeats` times (3), interleaved round by
round (restic, ours, ours encrypted, restic, ...; full ones into fresh targets),
and their medians reported with the load average seen: on a shared machine a
burst of load then lands on every row alike, where one backup each compared
whatever load each happened to meet. Wall clock includes the PostgreSQL
server's work for the dump (its `COPY`s), which no CPU figure here counts: it is
the same for every row, and on the full backup the longest single task.
Reported: seconds (wall clock),
CPU seconds (user + system of the command's processes: steadier than wall
clock on a shared machine), the ratio to the floor, what each target holds
(apparent bytes), and peak memory: the largest sum of resident memory over the process tree, sampled
every 10 ms, or the largest high-water mark (VmHWM) of a single process in it if larger
(the PostgreSQL server's own backends are not in the tree, for anyone). Then
odbox-backup's peak memory (full, no-change and restore) on a tenth of the
data and on ten times the files (half the bytes, a small database), to show
whether it grows with the data.

Fairness: the data is read once before the first measurement, so every tool
starts with the page cache warm (nothing is ever dropped from it);
a `CHECKPOINT` follows every change to the data and `sync` runs before every
timed step, both untimed, so no flush of someone else's writes lands in a
timed step; every timed step ends with `sync -f` (syncfs) of the file system
it wrote to, so every tool is timed to the same durability (odbox-backup and
restic make what they write durable themselves; pg_dump, tar, rsync and
pg_restore do not). The throwaway cluster runs with fsync off, for everyone
alike.

Goals (issue 4), printed as met or MISSED: full backup <= 1.2x the floor and
<= 0.7x restic; no-change backup <= 0.1x a full one; restore <= 1.3x the floor
(`pg_restore` + `tar -x`); repository after five 1 %-churn snapshots <= 1.15x
after one; peak memory under 200 MB whatever the data size. A missed goal
does not change the exit status (the shared machine is noisy and one run of
the full size takes many minutes): the exit status is 1 only when a command
failed.

    uv run --locked python bench/backup_speed.py                       # ~1 GB + 1 GB
    uv run --locked python bench/backup_speed.py --db-mb 50 --filestore-mb 50 --files 1000

The odbox-backup measured is the one `.venv/bin/python` imports (printed with a
digest of its sources): to measure a given commit, put a copy of its
`tools/backup/src` and `tools/common/src` first on `PYTHONPATH`.

Needs restic, rsync, zstd, tar and age-keygen: `apt-get install -y restic rsync zstd tar age`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import psycopg
from tests.conftest import PostgresCluster, start_postgres_cluster
from tests.odoo_data import Shape, create_schema, fill

from timing import BIN, REPO, compile_sources

MB = 1 << 20
CHURN_SNAPSHOTS = 5
PAGE = os.sysconf("SC_PAGE_SIZE")
NEEDED = {
    "restic": "restic",
    "rsync": "rsync",
    "zstd": "zstd",
    "tar": "tar",
    "age-keygen": "age",
    "bash": "bash",
    "sync": "coreutils",
}


class CommandFailed(RuntimeError):
    pass


# ------------------------------------------------------------------ measuring


@dataclass(frozen=True)
class Sample:
    seconds: float
    peak: int  # bytes
    cpu: float  # user + system seconds of the whole tree (its own, not the server's)
    load: float = 0.0  # the 1-minute load average at the end of the step


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _image(pid: int) -> tuple[str, bytes]:
    """A process's executable and command line: a child that has the same as its parent is
    one forked that has not exec'd yet (Python's subprocess forks, then execs pg_restore)."""
    return str(Path(f"/proc/{pid}/exe").readlink()), Path(f"/proc/{pid}/cmdline").read_bytes()


def tree_rss(root: int) -> tuple[int, int]:
    """Resident bytes of `root` and all its descendants now, and the largest high-water mark
    (VmHWM) among them: a process's peak since its exec, even one between two samples.

    A child forked but not yet exec'd is left out: its resident pages are its parent's,
    shared until written, so counting them again showed a restore of 150 MB as 285 MB when a
    sample fell between pg_restore's fork and its exec. (A child that kept working without
    an exec would be missed; none of the contenders makes one.)"""
    total, hwm, todo = 0, 0, [(root, None)]
    while todo:
        pid, parent = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            image = _image(pid)
            if image != parent:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * PAGE
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            hwm = max(hwm, int(line.split()[1]) * 1024)
            todo += [(child, image) for child in _children(pid)]
    return total, hwm


def measure(command: str, env: dict[str, str], log: Path) -> Sample:
    """Run `command` with bash (pipefail); wall-clock seconds and the process tree's peak RSS.

    Not `wait4`'s ru_maxrss: Linux carries a process's peak across fork and exec, so a
    command started from a large parent (this bench, with its emulator) would show the
    parent's size."""
    with log.open("ab") as out:
        out.write(f"$ {command}\n".encode())
        out.flush()
        start = time.perf_counter()
        child = subprocess.Popen(
            ["bash", "-o", "pipefail", "-ec", command], stdout=out, stderr=out, env=env
        )
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.01):
                peak[0] = max(peak[0], *tree_rss(child.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    if child.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise CommandFailed(
            f"exit {child.returncode}: {command}\n  " + "\n  ".join(tail) + f"\n(log: {log})"
        )
    return Sample(seconds, peak[0], usage.ru_utime + usage.ru_stime, os.getloadavg()[0])


def count_files(path: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(path))


def tree_bytes(path: Path) -> int:
    """Apparent size of every file under `path` (what an object store would bill)."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                total += Path(folder, name).lstat().st_size
    return total


# ------------------------------------------------------------------ the data


@dataclass
class Dataset:
    cluster: PostgresCluster
    db: str
    filestore: Path
    shape: Shape
    messages: int  # rows in mail_message after the initial fill
    churns: int = 0

    def dsn(self) -> str:
        return f"{self.cluster.dsn.rsplit(' dbname=', 1)[0]} dbname={self.db}"

    def db_bytes(self) -> int:
        return int(self.cluster.psql(f"SELECT pg_database_size('{self.db}')"))

    def churn(self) -> None:
        """1 % new attachments (files and rows) and 1 % more chatter messages."""
        self.churns += 1
        step = Shape(
            partners=0,
            messages=max(1, self.messages // 100),
            attachments=max(1, self.shape.attachments // 100),
            sizes=self.shape.sizes,
        )
        with psycopg.connect(self.dsn()) as conn:
            fill(conn, self.filestore, step, seed=1000 + self.churns)
        self.cluster.psql("VACUUM ANALYZE", db=self.db)
        self.cluster.psql("CHECKPOINT")

    def settle(self, quiet: float = 20, limit: float = 120) -> None:
        """Checkpoint, then wait until the WAL stays put for `quiet` seconds: after a checkpoint
        the server logs one more record (a standby snapshot) within about 15 s, and a full
        backup taken before it would look changed to the next run."""
        self.cluster.psql("CHECKPOINT")
        lsn, still, waited = self.cluster.psql("SELECT pg_current_wal_lsn()"), 0.0, 0.0
        while still < quiet and waited < limit:
            time.sleep(1)
            waited += 1
            now = self.cluster.psql("SELECT pg_current_wal_lsn()")
            still = still + 1 if now == lsn else 0
            lsn = now
        if still < quiet:
            print(f"the WAL kept moving for {limit:.0f} s; going on", flush=True)

    def write_elsewhere(self) -> None:
        """A write to another database of the cluster: Odoo's data is as it was, the WAL moved."""
        self.cluster.psql("CREATE TABLE IF NOT EXISTS bench_elsewhere (at timestamptz);"
                          " INSERT INTO bench_elsewhere VALUES (now())")  # fmt: skip
        self.cluster.psql("CHECKPOINT")


def make_dataset(
    cluster: PostgresCluster, db: str, filestore: Path, db_mb: int, fs_mb: int, files: int
) -> Dataset:
    """An Odoo-shaped database of about `db_mb` MiB and a filestore of `fs_mb` MiB in `files`."""
    started = time.perf_counter()
    cluster.psql(f'CREATE DATABASE "{db}"')
    # Shape.scaled's size bands average a little under filestore_bytes / files: ask for more
    first = Shape.scaled(fs_mb * MB, files)
    mean = sum(w * (low + high) / 2 for w, low, high in first.sizes) / sum(
        w for w, _, _ in first.sizes
    )
    shape = Shape.scaled(int(fs_mb * MB * (fs_mb * MB / max(1.0, mean * files))), files)
    base = Shape(partners=shape.partners, messages=0, attachments=shape.attachments,
                 sizes=shape.sizes)  # fmt: skip
    data = Dataset(cluster, db, filestore, shape, 0)
    with psycopg.connect(data.dsn()) as conn:
        create_schema(conn)
        fill(conn, filestore, base, seed=1)
    # mail_message carries the volume: add rows in batches until the database is large enough
    target, seed, batch = db_mb * MB, 2, 20_000
    while (size := data.db_bytes()) < target:
        with psycopg.connect(data.dsn()) as conn:
            fill(conn, filestore, Shape(partners=0, messages=batch, attachments=0), seed=seed)
        seed += 1
        data.messages += batch
        grown = data.db_bytes() - size
        batch = max(1000, min(500_000, int((target - size - grown) / max(1, grown) * batch)))
    cluster.psql("VACUUM FREEZE ANALYZE", db=db)  # hint bits now, not during the first dump
    # ANALYZE replaced rows of pg_statistic: vacuumed now, or autovacuum does it minutes later,
    # between the full backup and the one with no change (seen: its WAL record made that run
    # dump the database again, 0.58x a full one instead of 0.04x).
    cluster.psql("VACUUM pg_statistic", db=db)
    cluster.psql("CHECKPOINT")
    print(
        f"made {db}: {data.db_bytes() / MB:.0f} MiB database ({data.messages} messages), "
        f"{tree_bytes(filestore) / MB:.0f} MiB filestore in {files} files, "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return data


def warm(data: Dataset, env: dict[str, str], scratch: Path) -> None:
    """Read the database and the filestore once, so every tool starts with the same cache."""
    subprocess.run(["pg_dump", "-Fc", "-Z0", "-f", scratch, data.db], env=env, check=True)
    scratch.unlink()
    for folder, _, names in os.walk(data.filestore):
        for name in names:
            with Path(folder, name).open("rb") as f:
                while f.read(MB):
                    pass


# ------------------------------------------------------------------ the contenders


@dataclass
class Contender:
    """One way to back up: shell commands for its setup, a backup and a restore."""

    name: str
    target: Path
    setup: Callable[[], list[str]]
    backup: Callable[[int], str]
    restore: Callable[[int, str, Path], str]
    odbox: bool = False
    repeated: bool = False  # its full and no-change backups are repeated, interleaved
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    sizes: dict[str, list[int]] = field(default_factory=dict)

    def add(self, step: str, sample: Sample) -> None:
        self.samples.setdefault(step, []).append(sample)

    def size(self, what: str, value: int) -> None:
        self.sizes.setdefault(what, []).append(value)

    def seconds(self, step: str) -> float:
        return statistics.median(s.seconds for s in self.samples[step])

    def cpu(self, step: str) -> float:
        return statistics.median(s.cpu for s in self.samples[step])

    def loads(self, step: str) -> list[float]:
        return [s.load for s in self.samples[step]]

    def peak(self, step: str) -> int:
        return max(s.peak for s in self.samples[step])

    def bytes(self, what: str) -> int:
        return int(statistics.median(self.sizes[what]))


def q(path: Path | str) -> str:
    return shlex.quote(str(path))


def contenders(
    data: Dataset, work: Path, age_pub: str, key: Path, identity_row: bool
) -> list[Contender]:
    db, fs = q(data.db), q(data.filestore)
    floor_dir = work / "floor"
    floor = Contender(
        "floor: pg_dump -Fc + tar|zstd",
        work / "floor",
        lambda: [],
        lambda n: (
            f"pg_dump -Fc -f {q(floor_dir / f'db-{n}.dump')} {db}"
            f" && tar -C {fs} -cf - . | zstd -q -o {q(floor_dir / f'files-{n}.tar.zst')}"
            f" && sync -f {q(floor_dir)}"
        ),
        lambda n, new_db, folder: (
            f"createdb {q(new_db)} && pg_restore --no-owner -d {q(new_db)}"
            f" {q(floor_dir / f'db-{n}.dump')}"
            f" && mkdir {q(folder)}"
            f" && zstd -q -dc {q(floor_dir / f'files-{n}.tar.zst')} | tar -C {q(folder)} -xf -"
            f" && sync -f {q(folder)}"
        ),
    )
    seed_dir = work / "seed"
    seed = Contender(
        "seed: pg_dump SQL + rsync -a --delete",
        seed_dir,
        lambda: [f"mkdir -p {q(seed_dir / 'filestore')}"],
        lambda n: (
            f"pg_dump -f {q(seed_dir / 'odoo.sql')} {db}"
            f" && rsync -a --delete {fs}/ {q(seed_dir / 'filestore')}/ && sync -f {q(seed_dir)}"
        ),
        lambda n, new_db, folder: (
            f"createdb {q(new_db)}"
            f" && psql -X -q -v ON_ERROR_STOP=1 -d {q(new_db)} -f {q(seed_dir / 'odoo.sql')}"
            f" >/dev/null && rsync -a {q(seed_dir / 'filestore')}/ {q(folder)}/"
            f" && sync -f {q(folder)}"
        ),
    )
    restic_dir = work / "restic"
    restic = Contender(
        "restic: pg_dump -Z0|restic --stdin + files",
        restic_dir,
        lambda: [f"restic -q -r {q(restic_dir)} init"],
        lambda n: (
            f"pg_dump -Fc -Z0 {db} | restic -q -r {q(restic_dir)} backup --stdin"
            f" --stdin-filename odoo.dump --tag db"
            f" && restic -q -r {q(restic_dir)} backup --tag files {fs}"
            f" && sync -f {q(restic_dir)}"
        ),
        lambda n, new_db, folder: (
            f"createdb {q(new_db)} && restic -q -r {q(restic_dir)} dump --tag db latest"
            f" /odoo.dump | pg_restore --no-owner -d {q(new_db)}"
            f" && restic -q -r {q(restic_dir)} restore --tag files latest --target {q(folder)}"
            f" && sync -f {q(folder)}"
        ),
        repeated=True,
    )
    odbox = str(BIN / "odbox-backup")

    def odbox_row(name: str, repo: Path, recipient: str | None, run_identity: bool) -> Contender:
        init = f"{odbox} init --repo {q(repo)}" + (
            f" --recipient {q(recipient)}" if recipient else ""
        )
        read = f" --identity {q(key)}" if recipient else ""
        return Contender(
            name,
            repo,
            lambda: [init],
            lambda n: (
                f"{odbox} run --repo {q(repo)} --db {db} --filestore {fs}"
                + (read if run_identity else "")
                + f" && sync -f {q(repo)}"
            ),
            lambda n, new_db, folder: (
                f"{odbox} restore --repo {q(repo)} latest --db {q(new_db)}"
                f" --filestore {q(folder)}{read} && sync -f {q(folder)}"
            ),
            odbox=True,
            repeated=True,
        )

    rows = [
        floor,
        seed,
        restic,
        odbox_row("odbox-backup (not encrypted)", work / "odbox", None, False),
        odbox_row("odbox-backup (age, as the box runs it)", work / "odbox-age", age_pub, False),
    ]
    if identity_row:
        rows.append(
            odbox_row("odbox-backup (age, run --identity)", work / "odbox-age-id", age_pub, True)
        )
    return rows


# ------------------------------------------------------------------ the runs


def timed_step(
    rows: list[Contender], step: str, make: Callable[[Contender], str], env: dict[str, str],
    logs: Path,
) -> None:  # fmt: skip
    for row in rows:
        os.sync()
        sample = measure(make(row), env, logs / f"{row.target.name}.log")
        row.add(step, sample)
        print(f"  {step:<10} {row.name:<44} {sample.seconds:8.2f} s {sample.cpu:7.1f} cpu s "
              f"{sample.peak / MB:6.0f} MB  load {sample.load:.1f}", flush=True)  # fmt: skip


def fresh_target(row: Contender, env: dict[str, str], logs: Path) -> None:
    shutil.rmtree(row.target, ignore_errors=True)
    row.target.mkdir(parents=True)
    if row.odbox:
        row.target.rmdir()  # `init` wants an empty or absent folder
    for command in row.setup():
        measure(command, env, logs / f"{row.target.name}.log")


def one_run(
    rows: list[Contender], data: Dataset, env: dict[str, str], work: Path, repeats: int
) -> None:
    """One pass of every step. The full and the no-change backups of the rows compared with
    restic are taken `repeats` times, the rows one after another within each round (restic,
    ours, ours encrypted, restic, ...), so that a burst of load on the shared machine lands
    on every row alike and their medians compare; each round of full backups starts from
    fresh targets (the data stays as it is), and the last round's targets go on."""
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    for row in rows:
        fresh_target(row, env, logs)
    counter = {row.name: 0 for row in rows}
    data.settle()

    def backup(row: Contender) -> str:
        counter[row.name] += 1
        return row.backup(counter[row.name])

    timed_step(rows, "full", backup, env, logs)
    repeated = [row for row in rows if row.repeated]
    for _ in range(repeats - 1):
        for row in repeated:
            fresh_target(row, env, logs)
            counter[row.name] = 0
        timed_step(repeated, "full", backup, env, logs)
    for row in rows:
        row.size("one", tree_bytes(row.target))
    timed_step(rows, "no change", backup, env, logs)
    for _ in range(repeats - 1):
        timed_step(repeated, "no change", backup, env, logs)
    for row in rows:
        row.size("no change", tree_bytes(row.target) - row.sizes["one"][-1])
    data.write_elsewhere()
    before = {row.name: tree_bytes(row.target) for row in rows}
    timed_step(rows, "WAL moved", backup, env, logs)
    for row in rows:
        row.size("WAL moved", tree_bytes(row.target) - before[row.name])
    for _ in range(CHURN_SNAPSHOTS):
        data.churn()
        before = {row.name: tree_bytes(row.target) for row in rows}
        timed_step(rows, "1 % churn", backup, env, logs)
        for row in rows:
            row.size("churn", tree_bytes(row.target) - before[row.name])
    for row in rows:
        row.size("five", tree_bytes(row.target))

    restored: list[tuple[str, Path]] = []

    def restore(row: Contender) -> str:
        new_db = f"restored_{row.target.name.replace('-', '_')}"
        folder = work / "restored" / row.target.name
        folder.parent.mkdir(exist_ok=True)
        restored.append((new_db, folder))
        return row.restore(counter[row.name], new_db, folder)

    try:
        timed_step(rows, "restore", restore, env, logs)
    finally:
        for new_db, folder in restored:
            data.cluster.psql(f'DROP DATABASE IF EXISTS "{new_db}" WITH (FORCE)')
            shutil.rmtree(folder, ignore_errors=True)


def memory_at(
    cluster: PostgresCluster, env: dict[str, str], work: Path, sizes: tuple[int, int, int],
    age_pub: str, key: Path, identity_row: bool,
) -> dict[str, dict[str, int]]:  # fmt: skip
    """odbox-backup's peak memory (full backup, no-change backup, restore) on another dataset
    of (database MiB, filestore MiB, files); by row name, then step."""
    db_mb, fs_mb, files = sizes
    name = f"odoo_{db_mb}_{fs_mb}_{files}"
    here = work / name
    here.mkdir()
    data = make_dataset(cluster, name, here / "filestore", db_mb, fs_mb, files)
    warm(data, env, here / "warm.dump")
    data.settle()
    peaks: dict[str, dict[str, int]] = {}
    logs = here / "logs"
    logs.mkdir()
    for row in (r for r in contenders(data, here, age_pub, key, identity_row) if r.odbox):
        log = logs / f"{row.target.name}.log"
        for command in row.setup():
            measure(command, env, log)
        got = {}
        for step, n in (("full", 1), ("no change", 2)):
            os.sync()
            got[step] = measure(row.backup(n), env, log).peak
        folder = here / f"restored-{row.target.name}"
        new_db = f"{name}_{row.target.name.replace('-', '_')}"
        os.sync()
        try:
            got["restore"] = measure(row.restore(2, new_db, folder), env, log).peak
        finally:
            cluster.psql(f'DROP DATABASE IF EXISTS "{new_db}" WITH (FORCE)')
            shutil.rmtree(folder, ignore_errors=True)
        peaks[row.name] = got
    cluster.psql(f'DROP DATABASE "{name}" WITH (FORCE)')
    shutil.rmtree(here, ignore_errors=True)
    return peaks


def scaled_datasets(args: argparse.Namespace) -> dict[str, tuple[int, int, int]]:
    """The other data sizes for the memory check: (database MiB, filestore MiB, files)."""
    db, fs, files = args.db_mb, args.filestore_mb, args.files
    return {
        "1/10 data": (max(1, db // 10), max(1, fs // 10), max(10, files // 10)),
        # memory that grows with the number of files shows here: small files, a small database
        "10x files": (max(1, db // 50), max(1, fs // 2), files * 10),
    }


# ------------------------------------------------------------------ the report


def _mb(n: float) -> str:
    return f"{n / MB:,.1f}"


def table(title: str, header: list[str], lines: list[list[str]]) -> None:
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print(f"\n{title}\n")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                    for i, (h, w) in enumerate(zip(header, widths, strict=True))))  # fmt: skip
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for line in lines:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(line, widths, strict=True))))  # fmt: skip


Scaling = dict[str, dict[str, dict[str, int]]]  # dataset label -> row name -> step -> peak


def report(rows: list[Contender], scaling: Scaling) -> None:
    floor = rows[0]
    restic = next(r for r in rows if r.name.startswith("restic"))

    def step_table(step: str, title: str, size_label: str, size_key: str) -> None:
        lines = []
        for r in rows:
            line = [
                r.name,
                f"{r.seconds(step):.2f}",
                f"{r.seconds(step) / floor.seconds(step):.2f}x",
                f"{r.cpu(step):.1f}",
            ]
            if step in ("no change", "WAL moved"):
                line.append(f"{r.seconds(step) / r.seconds('full'):.3f}x")
            line += [_mb(r.bytes(size_key)), _mb(r.peak(step))]
            lines.append(line)
        header = ["", "seconds", "vs floor", "cpu s"]
        if step in ("no change", "WAL moved"):
            header.append("vs own full")
        table(title, [*header, size_label, "peak MB"], lines)

    runs = len(floor.samples["full"])
    repeats = len(restic.samples["full"])
    print(f"\n{'=' * 20} results: {runs} run(s), medians; {os.cpu_count()} CPUs {'=' * 20}")
    print("seconds: wall clock; cpu s: user + system time of the command's processes")
    print(
        f"full and no-change backups of restic and odbox-backup: medians of {repeats}, interleaved"
    )
    for step in ("full", "no change"):
        loads = [x for r in rows for x in r.loads(step)]
        print(
            f"load average (1 min) at the end of the {step} backups: median "
            f"{statistics.median(loads):.1f}, {min(loads):.1f} to {max(loads):.1f}"
        )
    step_table("full", "full backup", "target MB", "one")
    step_table("no change", "second backup, no change", "added MB", "no change")
    step_table("WAL moved", "third backup: no change to Odoo's data, a write to another database",
               "added MB", "WAL moved")  # fmt: skip
    step_table("1 % churn", f"backup after 1 % new attachments (median of {CHURN_SNAPSHOTS})",
               "added MB", "churn")  # fmt: skip
    restore_lines = [
        [r.name, f"{r.seconds('restore'):.2f}",
         f"{r.seconds('restore') / floor.seconds('restore'):.2f}x", f"{r.cpu('restore'):.1f}",
         _mb(r.peak("restore"))]
        for r in rows
    ]  # fmt: skip
    table("restore of the latest backup into a new database and folder",
          ["", "seconds", "vs floor", "cpu s", "peak MB"], restore_lines)  # fmt: skip
    size_lines = [
        [r.name, _mb(r.bytes("one")), _mb(r.bytes("five")),
         f"{r.bytes('five') / r.bytes('one'):.3f}x"]
        for r in rows
    ]  # fmt: skip
    table(f"target size: after one backup, after {CHURN_SNAPSHOTS} more 1 %-churn ones "
          "(and the two no-change ones)",
          ["", "one MB", "after MB", "ratio"], size_lines)  # fmt: skip
    peak_lines = [
        [
            r.name,
            *(_mb(r.peak(s)) for s in ("full", "no change", "WAL moved", "1 % churn", "restore")),
        ]
        for r in rows
    ]
    table("peak memory (MB, process tree)",
          ["", "full", "no change", "WAL moved", "churn", "restore"], peak_lines)  # fmt: skip
    if scaling:
        labels = list(scaling)
        lines = []
        for r in rows:
            for step in ("full", "no change", "restore"):
                if all(r.name in scaling[label] for label in labels):
                    others = [_mb(scaling[label][r.name][step]) for label in labels]
                    lines.append([f"{r.name}, {step}", _mb(r.peak(step)), *others])
        table("odbox-backup peak memory (MB) against data size",
              ["", "this data", *labels], lines)  # fmt: skip

    print("\ngoals (issue 4)\n")
    for r in rows:
        if not r.odbox:
            continue
        full = r.seconds("full")
        peak = max(r.peak(s) for s in r.samples)
        for label in scaling:
            if r.name in scaling[label]:
                peak = max(peak, *scaling[label][r.name].values())
        goals: list[tuple[str, bool | None]] = [
            (f"full backup <= 1.2x floor ({full / floor.seconds('full'):.2f}x)",
             full <= 1.2 * floor.seconds("full")),
            (f"full backup <= 0.7x restic ({full / restic.seconds('full'):.2f}x; in cpu "
             f"seconds {r.cpu('full') / restic.cpu('full'):.2f}x)",
             full <= 0.7 * restic.seconds("full")),
            (f"no-change backup <= 0.1x full ({r.seconds('no change') / full:.3f}x)",
             r.seconds("no change") <= 0.1 * full),
            (f"no change to Odoo's data, WAL moved: {r.seconds('WAL moved') / full:.3f}x full "
             "(what a box with Odoo running sees)", None),
            (f"restore <= 1.3x floor ({r.seconds('restore') / floor.seconds('restore'):.2f}x)",
             r.seconds("restore") <= 1.3 * floor.seconds("restore")),
            (f"after {CHURN_SNAPSHOTS} churn snapshots <= 1.15x one "
             f"({r.bytes('five') / r.bytes('one'):.3f}x)",
             r.bytes("five") <= 1.15 * r.bytes("one")),
            (f"peak memory < 200 MB, at every data size above ({peak / MB:.0f} MB)",
             peak < 200 * MB),
        ]  # fmt: skip
        print(r.name)
        for text, met in goals:
            print(f"  {'info  ' if met is None else 'met   ' if met else 'MISSED'}  {text}")


# ------------------------------------------------------------------ main


def odbox_source(env: dict[str, str]) -> str:
    """Which odbox-backup code runs: its folder, git commit, and a digest of its sources (the
    tool changes between runs; a copy put first on PYTHONPATH is measured instead)."""
    where = subprocess.run(
        [str(BIN / "python"), "-c", "import odbox_backup; print(odbox_backup.__file__)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    package = Path(where).parent
    digest = hashlib.sha256()
    for source in sorted(package.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    git = "not in this repository"
    if package.is_relative_to(REPO):
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "tools"],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        git = f"git {head}{' with uncommitted changes under tools/' if dirty else ''}"
    return f"odbox-backup source: {package} ({git}; sha256 of its *.py {digest.hexdigest()[:12]})"


def check_tools() -> None:
    missing = [name for name in NEEDED if shutil.which(name) is None]
    if missing:
        packages = " ".join(sorted({NEEDED[m] for m in missing}))
        sys.exit(f"missing {', '.join(missing)}: apt-get install -y {packages}")


@contextlib.contextmanager
def work_folder(parent: str, keep: bool) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="odbox-backup-bench-", dir=parent))
    try:
        yield work
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def scaling_only(
    args: argparse.Namespace, cluster: PostgresCluster, env: dict[str, str], work: Path,
    age_pub: str, key: Path,
) -> None:  # fmt: skip
    """--scaling-only: the memory rows of the report, without the half hour before them."""
    scaling: Scaling = {
        label: memory_at(cluster, env, work, sizes, age_pub, key, args.odbox_identity_row)
        for label, sizes in scaled_datasets(args).items()
    }
    labels = list(scaling)
    names = [name for name in scaling[labels[0]] if all(name in scaling[x] for x in labels)]
    lines = [[f"{name}, {step}", *(_mb(scaling[x][name][step]) for x in labels)]
             for name in names for step in ("full", "no change", "restore")]  # fmt: skip
    table("odbox-backup peak memory (MB) against data size", ["", *labels], lines)
    peak = max(
        v for by_row in scaling.values() for steps in by_row.values() for v in steps.values()
    )
    verdict = "met" if peak < 200 * MB else "MISSED"
    print(f"\n  {verdict:7} peak memory < 200 MB at these sizes ({peak / MB:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-mb", type=int, default=1024, help="database size (default 1024)")
    parser.add_argument("--filestore-mb", type=int, default=1024,
                        help="filestore size (default 1024)")  # fmt: skip
    parser.add_argument("--files", type=int, default=20_000, help="filestore files (20000)")
    parser.add_argument("--runs", type=int, default=1,
                        help="runs, fresh targets each; medians (default 1)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3,
                        help="full and no-change backups of restic and odbox-backup per run, "
                        "interleaved; medians (default 3)")  # fmt: skip
    parser.add_argument("--workdir", default="/var/tmp",
                        help="where the temp work folder goes (default /var/tmp)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--no-scaling", action="store_true",
                        help="skip odbox-backup's peak memory on a tenth of the data and on "
                        "ten times the files")  # fmt: skip
    parser.add_argument("--scaling-only", action="store_true",
                        help="only odbox-backup's peak memory on a tenth of the data and on ten "
                        "times the files (minutes, not half an hour)")  # fmt: skip
    parser.add_argument("--odbox-identity-row", action="store_true",
                        help="also run odbox-backup encrypted with --identity on run")  # fmt: skip
    args = parser.parse_args()

    check_tools()
    compile_sources()
    with work_folder(args.workdir, args.keep) as work, start_postgres_cluster() as cluster:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ODBOX_", "PG", "RESTIC_"))}  # fmt: skip
        env.update(
            PGHOST=str(cluster.socket_dir), PGPORT=str(cluster.port), PGUSER=cluster.superuser,
            PATH=f"{cluster.bindir}{os.pathsep}{env.get('PATH', '')}",
            RESTIC_PASSWORD="bench-password",  # noqa: S106 (a throwaway repository)
            RESTIC_CACHE_DIR=str(work / "restic-cache"),
            ODBOX_BACKUP_CACHE=str(work / "odbox-cache"),  # its default is under ~/.cache
            ODBOX_BACKUP_AUTH_KEY_FILE=str(work / "odbox-auth.key"),  # init writes it
        )  # fmt: skip
        key = work / "age-key.txt"
        subprocess.run(["age-keygen", "-o", key], check=True, capture_output=True)
        age_pub = subprocess.run(["age-keygen", "-y", key], check=True, capture_output=True,
                                 text=True).stdout.strip()  # fmt: skip
        if args.scaling_only:
            scaling_only(args, cluster, env, work, age_pub, key)
            return
        data = make_dataset(cluster, "odoo", work / "live" / "filestore", args.db_mb,
                            args.filestore_mb, args.files)  # fmt: skip
        warm(data, env, work / "warm.dump")
        versions = [
            subprocess.run(c, capture_output=True, text=True, env=env).stdout.splitlines()[0]
            for c in (["pg_dump", "--version"], ["restic", "version"], ["zstd", "--version"],
                      ["rsync", "--version"], [str(BIN / "odbox-backup"), "--version"])
        ]  # fmt: skip
        print("; ".join(versions), flush=True)
        print(odbox_source(env), flush=True)
        rows = contenders(data, work, age_pub, key, args.odbox_identity_row)
        try:
            for run in range(args.runs):
                print(f"run {run + 1} of {args.runs}", flush=True)
                one_run(rows, data, env, work, max(1, args.repeats))
            scaling: Scaling = {}
            if not args.no_scaling:
                for label, sizes in scaled_datasets(args).items():
                    scaling[label] = memory_at(cluster, env, work, sizes, age_pub, key,
                                               args.odbox_identity_row)  # fmt: skip
        except CommandFailed as e:
            print(f"\nFAILED: {e}", file=sys.stderr)
            sys.exit(1)
        print(f"\ndataset: database {data.db_bytes() / MB:,.0f} MiB, filestore "
              f"{tree_bytes(data.filestore) / MB:,.0f} MiB in "
              f"{count_files(data.filestore)} files (after the churn)")  # fmt: skip
        report(rows, scaling)


if __name__ == "__main__":
    main()
