"""k8s-migrate pull through the Kubernetes API emulator, side by side with a local pg_dump + tar.

Issue 5. Two Odoo-shaped datasets (tests/odoo_data.py, as bench/backup_speed.py
makes them): about 100 MB and about 1 GB, half database and half filestore.
For each, in one run, round-robin:

- local: `pg_dump -Fc` of the database to a file, and `tar -c` of the
  filestore to a file, in the same work folder: what the seed's procedure
  copies, without Kubernetes in the way (the floor);
- k8s-migrate: `pull --repo` into a new odbox-backup repository through the
  emulator in tests/k8s_migrate/emulator.py (the official `kubernetes`
  client, exec over WebSocket; the emulator runs `pg_dump` and `tar` as local
  processes, in this bench's own process).

Reported: seconds (median of --runs), MB/s of the data (database size as
PostgreSQL counts it plus the filestore's bytes), and peak memory of the
command's process tree (the emulator, pg_dump and tar are not in
k8s-migrate's tree; for the local row, pg_dump and tar are). Goal (issue 5):
k8s-migrate's peak memory at 1 GB is at most 1.2x its peak at 100 MB.

    uv run --locked python bench/k8s_pull.py              # ~100 MB and ~1 GB, 3 runs each
    uv run --locked python bench/k8s_pull.py --sizes 20 --runs 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_postgres_cluster
from tests.k8s_migrate.emulator import K8sEmulator

from backup_speed import MB, Sample, make_dataset, measure, tree_bytes
from timing import BIN

NS = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1024],
                        help="dataset sizes in MiB, half database, half filestore")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="parent of the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="k8s-pull-bench-", dir=args.workdir))
    results: dict[int, dict[str, list[Sample]]] = {}
    data_bytes: dict[int, int] = {}
    try:
        with start_postgres_cluster() as cluster, K8sEmulator() as k8s:
            pg_env = {k: v for k, v in cluster.env.items() if k.startswith("PG")}
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "KUBE"))}
            env |= {**pg_env, "KUBECONFIG": str(k8s.kubeconfig),
                    "XDG_CACHE_HOME": str(work / "cache")}  # fmt: skip
            k8s.add_namespace(NS)
            for size in args.sizes:
                db = f"odoo_{size}"
                pvc = work / f"pvc-{size}"
                filestore = pvc / "filestore" / db
                files = max(200, size * 20)  # about 50 KiB a file on average, as Odoo's
                data = make_dataset(cluster, db, filestore, size // 2, size // 2, files)
                data_bytes[size] = data.db_bytes() + tree_bytes(filestore)
                k8s.add_pvc(NS, f"data-{size}", pvc)
                k8s.add_deployment(NS, f"odoo-{size}", {"app": f"odoo-{size}"}, replicas=1,
                                   mounts={"/var/lib/odoo": ("pvc", f"data-{size}")})  # fmt: skip
                k8s.add_pod(NS, f"pg-{size}", {"app": "pg"}, containers=["postgres"], env=pg_env)
                rows = results.setdefault(size, {"local": [], "k8s": []})
                for run in range(args.runs):
                    out = work / f"local-{size}-{run}"
                    out.mkdir()
                    rows["local"].append(measure(
                        f"pg_dump -Fc -f {out}/dump {db} && "
                        f"tar -C {filestore} -cf {out}/files.tar .",
                        env, work / "log"))  # fmt: skip
                    shutil.rmtree(out)
                    repo = work / f"repo-{size}-{run}"
                    k8s_migrate = BIN / "k8s-migrate"
                    rows["k8s"].append(measure(
                        f"{BIN}/odbox-backup init --repo {repo} && {k8s_migrate} pull "
                        f"--namespace {NS} --odoo-deployment odoo-{size} --db-pod pg-{size} "
                        f"--db-name {db} --pvc data-{size} --repo {repo} --scale-back",
                        env, work / "log"))  # fmt: skip
                    shutil.rmtree(repo)
                    shutil.rmtree(work / "cache", ignore_errors=True)
                    print(f"  {size} MiB run {run + 1}: local {rows['local'][-1].seconds:.1f} s, "
                          f"k8s-migrate {rows['k8s'][-1].seconds:.1f} s", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nk8s-migrate pull against a local pg_dump -Fc + tar -c (median of {args.runs})")
    print(f"{'dataset':>10} {'':>12} {'seconds':>8} {'MB/s':>7} {'peak MB':>8}")
    for size, rows in results.items():
        for name, label in (("local", "local"), ("k8s", "k8s-migrate")):
            seconds = statistics.median(s.seconds for s in rows[name])
            peak = max(s.peak for s in rows[name])
            print(f"{data_bytes[size] / MB:8.0f} MB {label:>12} {seconds:8.1f} "
                  f"{data_bytes[size] / MB / seconds:7.1f} {peak / MB:8.0f}")  # fmt: skip
    if len(results) >= 2:
        small, large = min(results), max(results)
        ratio = max(s.peak for s in results[large]["k8s"]) / max(
            s.peak for s in results[small]["k8s"]
        )
        verdict = "met" if ratio <= 1.2 else "MISSED"
        print(f"k8s-migrate peak memory at {large} MiB / at {small} MiB: {ratio:.2f}x "
              f"(goal <= 1.2x: {verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
