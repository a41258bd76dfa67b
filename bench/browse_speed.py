"""How fast one file comes back: `ls`, `dump`, `status` and `stats` on the 200,000-file repository.

The dataset is `just bench-backup`'s "10x files" one (a small database, about
500 MiB in 200,000 files, every file an ir_attachment row), backed up once into
an encrypted repository (age) in a local folder; then each command is timed
round-robin with `--identity`, as an admin runs it, and the medians printed.
A copy of the snapshot without its attachment-names object (as one made
before it, or by import) shows what `ls` costs when it reads the dump, and
`verify --read-data-subset 5%` what share of the stored bytes it reads.

    python bench/browse_speed.py [--files 200000] [--filestore-mb 500] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_postgres_cluster

from backup_speed import make_dataset, work_folder
from timing import BIN, compile_sources

GOAL = 1.0  # seconds: the goal for ls, dump of one file and status
MB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000, help="filestore files (200000)")
    parser.add_argument("--filestore-mb", type=int, default=500, help="filestore MiB (500)")
    parser.add_argument("--db-mb", type=int, default=20, help="database MiB (20)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (5)")
    parser.add_argument("--workdir", default="/var/tmp", help="where the work folder goes")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    compile_sources()
    with work_folder(args.workdir, args.keep) as work, start_postgres_cluster() as cluster:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ODBOX_", "PG"))}
        env.update(PGHOST=str(cluster.socket_dir), PGPORT=str(cluster.port),
                   PGUSER=cluster.superuser, PATH=f"{cluster.bindir}{os.pathsep}{env['PATH']}",
                   ODBOX_BACKUP_CACHE=str(work / "cache"),
                   ODBOX_BACKUP_AUTH_KEY_FILE=str(work / "auth.key"))  # fmt: skip
        data = make_dataset(cluster, "browse", work / "filestore", args.db_mb,
                            args.filestore_mb, args.files)  # fmt: skip
        key = work / "age-key.txt"
        subprocess.run(["age-keygen", "-o", key], check=True, capture_output=True)
        public = subprocess.run(["age-keygen", "-y", key], check=True, capture_output=True,
                                text=True).stdout.strip()  # fmt: skip
        tool = str(BIN / "odbox-backup")
        repo = str(work / "repo")
        subprocess.run([tool, "init", "--repo", repo, "--recipient", public], env=env, check=True)
        started = time.perf_counter()
        subprocess.run([tool, "run", "--repo", repo, "--db", "browse", "--filestore",
                        str(data.filestore)], env=env, check=True)  # fmt: skip
        print(f"backed up in {time.perf_counter() - started:.0f} s", flush=True)
        ident = ["--identity", str(key)]
        new, old = _without_names(Path(repo), key, work / "auth.key")
        listed = subprocess.run([tool, "ls", "--repo", repo, new, *ident, "--no-names",
                                 "--json"], env=env, check=True, capture_output=True)  # fmt: skip
        files = json.loads(listed.stdout)
        middle = files[len(files) // 2]["path"]
        commands = {
            f"ls ID {middle[:8]}… (one file, its attachment's name)":
                [tool, "ls", "--repo", repo, new, middle, *ident],
            "ls ID PATH --no-names": [tool, "ls", "--repo", repo, new, middle, *ident,
                                      "--no-names"],
            "ls ID PATH, a snapshot without names object (reads the dump)":
                [tool, "ls", "--repo", repo, old, middle, *ident],
            "dump ID PATH --out": [tool, "dump", "--repo", repo, new, middle, *ident,
                                   "--out", str(work / "one-file")],
            f"ls ID (all {len(files)} files, --no-names)":
                [tool, "ls", "--repo", repo, new, *ident, "--no-names"],
            "status": [tool, "status", "--repo", repo, *ident],
            "stats": [tool, "stats", "--repo", repo, *ident],
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                start = time.perf_counter()
                subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - start)
        print(f"\n{len(files)} files, encrypted, --identity; median of {args.runs}:")
        for name, values in times.items():
            median = statistics.median(values)
            goal = "" if "all" in name or "without" in name or name == "stats" else (
                "  met" if median < GOAL else "  MISSED")  # fmt: skip
            print(f"  {median:6.2f} s  {name}{goal}")
        subset = [tool, "verify", "--repo", repo, *ident, "--read-data-subset", "5%", "--json"]
        checked = subprocess.run(subset, env=env, check=True, capture_output=True)
        report = json.loads(checked.stdout)
        read, stored = report["objects"]["bytes_read"], report["subset"]["of_stored_bytes"]
        chosen = report["subset"]["stored_bytes"]
        print(
            f"  verify --read-data-subset 5%: read {read / MB:.1f} MiB of content from "
            f"{chosen / MB:.1f} MiB stored, of {stored / MB:.1f} MiB stored in all "
            f"({100 * chosen / stored:.1f} % of the stored bytes)"
        )


def _without_names(repo: Path, key: Path, auth_key: Path) -> tuple[str, str]:
    """The latest snapshot again under a new ID, without `filestore.names`: both IDs."""
    from odbox_backup.repository import AuthKey, Repository
    from odbox_backup.store import LocalStore
    from odbox_common.age import load_identities

    opened = Repository.open(LocalStore(repo), load_identities(key.read_bytes(), str(key)),
                             AuthKey.load(auth_key))  # fmt: skip
    new = opened.snapshot_ids()[-1]
    manifest = opened.read_snapshot(new)
    del manifest["filestore"]["names"]
    manifest["id"] = opened.next_snapshot_id()
    opened.write_snapshot(manifest)
    return new, str(manifest["id"])


if __name__ == "__main__":
    main()
