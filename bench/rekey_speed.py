"""What rotating a repository's recipients costs, against the two other ways to get there.

Issue 22 item 3. An Odoo-shaped dataset (bench/backup_speed.py's `make_dataset`: about
1 GB of database and 1 GB of filestore in 20,000 files by default) is backed up once into a
local repository encrypted to two age keys A and B. Then, each timed (wall clock and CPU
seconds of the command's processes, peak memory of its process tree):

- rekey: `odbox-backup recipients remove B --add C --identity A` (every age header
  rewritten, payloads kept: odbox_backup/rekey.py);
- full re-encryption: `init` of a new repository to A and C, then `copy all --to` it with
  `--identity A` (every object decrypted, decompressed, checked and encrypted again: what
  a rotation costs without header rewrapping);
- fresh backup: `init` of a new repository to A and C and a `run` of the database and
  filestore (what starting over costs).

Printed: a table of the three, and for the rekey the bytes written again against the bytes
stored (every encrypted file is written whole: its header is at its start; on S3 each is
downloaded and uploaded) and how many of them are new headers. Each step ends with
`sync -f` of the work folder, inside its time. Exit status 1 only when a command failed.

    uv run --locked python bench/rekey_speed.py                        # ~1 GB + 1 GB
    uv run --locked python bench/rekey_speed.py --db-mb 100 --filestore-mb 100 --files 2000
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_postgres_cluster

from backup_speed import (
    MB,
    CommandFailed,
    Sample,
    make_dataset,
    measure,
    table,
    tree_bytes,
    warm,
    work_folder,
)
from timing import BIN, compile_sources


def _key(work: Path, name: str) -> tuple[Path, str]:
    path = work / f"{name}.txt"
    subprocess.run(["age-keygen", "-o", path], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", path], check=True, capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    return path, public


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-mb", type=int, default=1024, help="database size (default 1024)")
    parser.add_argument("--filestore-mb", type=int, default=1024,
                        help="filestore size (default 1024)")  # fmt: skip
    parser.add_argument("--files", type=int, default=20_000, help="filestore files (20000)")
    parser.add_argument("--workdir", default="/var/tmp",
                        help="where the temp work folder goes (default /var/tmp)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    compile_sources()
    with work_folder(args.workdir, args.keep) as work, start_postgres_cluster() as cluster:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ODBOX_", "PG"))}
        env.update(
            PGHOST=str(cluster.socket_dir), PGPORT=str(cluster.port), PGUSER=cluster.superuser,
            PATH=f"{BIN}{os.pathsep}{cluster.bindir}{os.pathsep}{env.get('PATH', '')}",
            ODBOX_BACKUP_CACHE=str(work / "odbox-cache"),
            ODBOX_BACKUP_AUTH_KEY_FILE=str(work / "odbox-auth.key"),  # the first init writes it
        )  # fmt: skip
        a, a_pub = _key(work, "a")
        _, b_pub = _key(work, "b")
        _, c_pub = _key(work, "c")
        data = make_dataset(cluster, "odoo", work / "live" / "filestore", args.db_mb,
                            args.filestore_mb, args.files)  # fmt: skip
        warm(data, env, work / "warm.dump")
        log = work / "bench.log"
        repo, copied, fresh = work / "repo", work / "copied", work / "fresh"
        run = (f"odbox-backup run --repo {{repo}} --db odoo --filestore "
               f"{shlex.quote(str(data.filestore))}")  # fmt: skip
        sync = f"sync -f {shlex.quote(str(work))}"
        try:
            measure(f"odbox-backup init --repo {repo} --recipient {a_pub} --recipient {b_pub}",
                    env, log)  # fmt: skip
            first = measure(f"{run.format(repo=repo)} && {sync}", env, log)
            stored = tree_bytes(repo)
            result_file = work / "rekey.json"
            rekey = measure(
                f"odbox-backup recipients remove --repo {repo} {b_pub} --add {c_pub} "
                f"--identity {a} --json > {result_file} && {sync}", env, log,
            )  # fmt: skip
            result = json.loads(result_file.read_text())
            recrypt = measure(
                f"odbox-backup init --repo {copied} --recipient {a_pub} --recipient {c_pub} && "
                f"odbox-backup copy --repo {repo} --identity {a} all --to {copied} && {sync}",
                env, log,
            )  # fmt: skip
            again = measure(
                f"odbox-backup init --repo {fresh} --recipient {a_pub} --recipient {c_pub} && "
                f"{run.format(repo=fresh)} && {sync}", env, log,
            )  # fmt: skip
        except CommandFailed as e:
            print(f"\nFAILED: {e}", file=sys.stderr)
            sys.exit(1)
        print(f"\ndataset: database {data.db_bytes() / MB:,.0f} MiB, filestore "
              f"{tree_bytes(data.filestore) / MB:,.0f} MiB in {args.files} files; repository "
              f"{stored / MB:,.0f} MiB ({result['packs']} packs, {result['objects']} objects "
              f"alone, {result['snapshots']} manifest)")  # fmt: skip

        def row(name: str, s: Sample) -> list[str]:
            return [name, f"{s.seconds:.1f}", f"{s.cpu:.1f}", f"{s.peak / MB:.0f}",
                    f"{s.seconds / rekey.seconds:.1f}x"]  # fmt: skip

        table("rotating recipients (remove B, add C) on a local repository",
              ["", "seconds", "CPU s", "peak MB", "vs rekey"],
              [row("rekey (headers rewrapped)", rekey),
               row("full re-encryption (init + copy all)", recrypt),
               row("fresh backup (init + run)", again),
               row("(the first backup, for scale)", first)])  # fmt: skip
        written, total = result["bytes_written"], result["bytes_stored"]
        print(f"\nrekey wrote {written / MB:,.1f} MiB again of {total / MB:,.1f} MiB stored "
              f"({written / max(1, total):.1%}); new headers {result['header_bytes']:,} bytes "
              f"({result['header_bytes'] / max(1, written):.3%}); on S3 every stored byte is "
              "downloaded and uploaded once")  # fmt: skip


if __name__ == "__main__":
    main()
