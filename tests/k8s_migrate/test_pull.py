"""k8s-migrate against the emulated cluster: the real console script, the official client.

The "cluster" is tests/k8s_migrate/emulator.py: its Postgres pod runs pg_dump
against the test PostgreSQL, and the PVC is a temp folder holding Odoo's data
folder (`filestore/<db>/…`). What arrives is checked by restoring it with
odbox-backup (or psql, for the zip) and comparing every table and file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import psycopg
import pytest

from tests.backup.helpers import db_dsn, odoo_state
from tests.helpers import one_error_line
from tests.k8s_migrate.emulator import ExecCall
from tests.k8s_migrate.shop import K8S_MIGRATE, NS, ODBOX_BACKUP, Shop, is_dump, is_tar


def test_pull_into_a_repository_restores_every_row_and_file(shop: Shop) -> None:
    source = odoo_state(shop.dsn, shop.filestore)
    done = shop.pull()
    assert done.returncode == 0, done.stderr
    assert len(shop.snapshots()) == 1
    assert "deleted helper pod" in done.stdout + done.stderr
    shop.assert_put_back(replicas=0)  # Odoo stays down: the box takes over from here
    # Streams stay streams: nothing was written outside the repository.
    assert list((shop.tmp / "tmp").iterdir()) == []
    assert shop.restore(f"{shop.db}_restored", shop.tmp / "restored") == source

    manifest = json.loads(subprocess.run(
        [str(ODBOX_BACKUP), "show", "latest", "--repo", str(shop.repo), "--json"],
        capture_output=True, text=True, env=shop.env, check=True).stdout)  # fmt: skip
    assert manifest["source"] == "k8s-migrate" and manifest["mode"] == "cold"
    assert manifest["origin"] == f"test/{NS}/odoo"
    assert manifest["odoo"]["modules"]["base"].startswith("17.0")


def test_scale_back_brings_odoo_back(shop: Shop) -> None:
    done = shop.pull("--scale-back")
    assert done.returncode == 0, done.stderr
    shop.assert_put_back(replicas=2)


def test_pull_into_an_odoo_zip(shop: Shop) -> None:
    source_tables, source_files = odoo_state(shop.dsn, shop.filestore)
    out = shop.tmp / "odoo.zip"
    done = shop.migrate("pull", *shop.args("--odoo-zip", str(out)))
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert {"odoo_dump", "db_name", "version", "version_info", "major_version",
                "pg_version", "modules"} <= manifest.keys()  # fmt: skip
        assert manifest["db_name"] == shop.db and manifest["version"] == "17.0"
        files = {
            n.removeprefix("filestore/"): hashlib.sha256(zf.read(n)).hexdigest()
            for n in zf.namelist() if n.startswith("filestore/")
        }  # fmt: skip
        sql = zf.read("dump.sql")
    assert files == source_files
    new = f"{shop.db}_from_zip"
    shop.postgres.psql(f"CREATE DATABASE {new}")
    subprocess.run([shop.postgres.bindir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", new],
                   input=sql, env=shop.postgres.env, check=True, capture_output=True)  # fmt: skip
    assert odoo_state(db_dsn(shop.postgres, new), shop.filestore)[0] == source_tables
    assert [p.name for p in shop.tmp.iterdir() if p.name.startswith(".odoo.zip")] == []


def test_plan_reads_only_and_shows_the_sizes(shop: Shop) -> None:
    done = shop.migrate("plan", *shop.args("--repo", str(shop.repo)))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "scale deployment shop/odoo from 2 to 0" in out
    assert "pg_dump" in out and "database " in out and "MiB" in out + "KiB"
    files = sum(1 for p in shop.filestore.rglob("*") if p.is_file())
    assert f"{files} files" in out
    methods = {(r.method, r.exec) for r in shop.k8s.requests}
    assert methods <= {("GET", False), ("GET", True)}, shop.k8s.requests
    assert shop.k8s.replicas(NS, "odoo") == 2 and shop.snapshots() == []
    as_json = json.loads(
        shop.migrate("plan", *shop.args("--repo", str(shop.repo), "--json")).stdout
    )
    assert len(as_json["steps"]) >= 5


@pytest.mark.parametrize(
    "fault",
    ["pg_dump fails", "dump cut", "tar cut", "tar fails", "helper pending", "scale forbidden"],
)
def test_a_failure_writes_nothing_and_puts_the_cluster_back(shop: Shop, fault: str) -> None:
    k8s = shop.k8s
    extra: list[str] = []
    if fault == "pg_dump fails":
        k8s.fail_exec(is_dump, exit_code=1, after_bytes=20_000,
                      stderr=b'pg_dump: error: query failed: connection lost\n')  # fmt: skip
        said = "failed with exit status 1: pg_dump: error: query failed"
    elif fault == "dump cut":
        k8s.drop_exec(is_dump, after_bytes=50_000)
        said = "the connection dropped after 50000 bytes"
    elif fault == "tar cut":
        k8s.drop_exec(is_tar, after_bytes=300_000)
        said = "connection dropped"
    elif fault == "tar fails":
        k8s.fail_exec(is_tar, exit_code=2, stderr=b"tar: ./ab: Cannot open: Permission denied\n")
        said = "failed with exit status 2: tar: ./ab: Cannot open: Permission denied"
    elif fault == "helper pending":
        k8s.keep_pending()
        extra = ["--timeout", "3"]
        said = "stayed Pending for 3 s"
    else:
        k8s.forbid("patch", "deployments/scale")
        said = "403 Forbidden"
    done = shop.pull(*extra)
    assert done.returncode == 1, done.stdout + done.stderr
    assert said in one_error_line(done), done.stderr
    assert shop.snapshots() == []
    shop.assert_put_back(replicas=2)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_sigterm_and_sighup_put_the_cluster_back(shop: Shop, signum: int) -> None:
    shop.k8s.keep_pending()  # the pull waits for its helper pod: interrupt it there
    child = subprocess.Popen([str(K8S_MIGRATE), "pull", *shop.args("--repo", str(shop.repo))],
                             env=shop.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not shop.helpers_left():
        assert time.monotonic() < deadline and child.poll() is None, child.communicate()
        time.sleep(0.05)
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted; the cluster was put back" in err
    assert shop.snapshots() == []
    shop.assert_put_back(replicas=2)


def test_a_second_pull_reuses_the_files_that_arrived(shop: Shop) -> None:
    total = sum(p.stat().st_size for p in shop.filestore.rglob("*") if p.is_file())
    shop.k8s.drop_exec(is_tar, after_bytes=total // 2, times=1)
    first = shop.pull()
    assert first.returncode == 1 and shop.snapshots() == []
    # A line cut short (a full disk, a crash) does not spoil the journal's other lines.
    (journal,) = (shop.tmp / "cache" / "k8s-migrate").glob("*.jsonl")
    with journal.open("a") as f:
        f.write('{"path":"ab/cut')
    second = shop.pull()
    assert second.returncode == 0, second.stderr
    tars = [r for r in shop.k8s.exec_log if is_tar(ExecCall(r.namespace, r.pod, r.container,
                                                            r.command))]  # fmt: skip
    assert len(tars) == 2
    assert tars[0].stdout_bytes == total // 2
    # The second tar sends only what the first did not deliver whole: less than the files'
    # bytes (a tar of them all is more, with its headers), and the tool says how many it kept.
    kept = re.search(r"(\d+) of (\d+) files were already in the repository", second.stdout)
    assert kept and 0 < int(kept[1]) < int(kept[2]), second.stdout
    assert tars[1].stdout_bytes < total, (tars[1].stdout_bytes, total)
    assert shop.restore(f"{shop.db}_restored", shop.tmp / "restored") == odoo_state(
        shop.dsn, shop.filestore
    )


def test_bad_input_is_one_line(shop: Shop) -> None:
    cases = {
        ("--filestore-path", "../etc"): "is not a path in the PVC",
        ("--db-pod", "nope"): "there is no pod nope in namespace shop",
        ("--pvc", "other"): "there is no persistentvolumeclaim other",
        ("--namespace", "gone"): "there is no namespace gone",
        ("--odoo-deployment", "web"): "there is no deployment web",
        ("--db-container", "sidecar"): "has no container sidecar",
        ("--context", "prod"): "no context 'prod'",
    }
    for (option, value), said in cases.items():
        args = shop.args("--repo", str(shop.repo), "--filestore-path", f"filestore/{shop.db}")
        args[args.index(option) + 1] = value
        done = shop.migrate("pull", *args)
        assert done.returncode == 2, (option, done.stderr)
        assert said in one_error_line(done)
    done = shop.migrate("pull", *shop.args())
    assert done.returncode == 2 and "--repo" in one_error_line(done)
    bad_db = shop.args("--repo", str(shop.repo))
    bad_db[bad_db.index("--db-name") + 1] = "missing_db"
    done = shop.migrate("pull", *bad_db)
    assert done.returncode == 1 and "missing_db" in one_error_line(done)
    assert shop.k8s.replicas(NS, "odoo") == 2


def test_a_terminal_gets_progress_bars_for_the_dump_and_the_filestore(shop: Shop) -> None:
    import pexpect

    child = pexpect.spawn(str(K8S_MIGRATE), ["pull", *shop.args("--repo", str(shop.repo))],
                          env=shop.env, timeout=120, dimensions=(40, 160))  # fmt: skip
    child.expect(pexpect.EOF)
    child.close()
    screen = child.before.decode(errors="replace")
    assert child.exitstatus == 0, screen
    assert "━" in screen and "MiB" in screen  # rich's bars, with bytes done
    assert f"pg_dump {shop.db} in pod postgres-0" in screen
    assert f"tar of filestore/{shop.db}/ in helper pod" in screen


def _peak_rss(shop: Shop, *args: str) -> int:
    """The peak resident memory (VmHWM) of one `k8s-migrate` process, read until it exits.

    Not wait4's ru_maxrss: Linux carries it across fork and exec, so it would include this
    test process's own size (its emulator, its data)."""
    child = subprocess.Popen([str(K8S_MIGRATE), *args], env=shop.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)  # fmt: skip
    peak = 0
    while child.poll() is None:
        with contextlib.suppress(OSError, ValueError, IndexError):  # IndexError: a zombie
            status = Path(f"/proc/{child.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) * 1024)
        time.sleep(0.01)
    assert child.returncode == 0, child.stderr and child.stderr.read()
    return peak


def test_memory_does_not_grow_with_the_data(shop: Shop) -> None:
    """A 160 MiB file and a dump 160 MiB larger than before cost no more memory."""
    small = _peak_rss(shop, "pull", *shop.args("--repo", str(shop.repo), "--scale-back"))
    big = os.urandom(1 << 20) * 160
    name = hashlib.sha1(big).hexdigest()  # noqa: S324 (Odoo's file names)
    (shop.filestore / name[:2]).mkdir(exist_ok=True)
    (shop.filestore / name[:2] / name).write_bytes(big)
    with psycopg.connect(shop.dsn) as conn:
        conn.execute("CREATE TABLE big (id int PRIMARY KEY, data bytea)")
        for i in range(160):  # incompressible rows: the dump grows by 160 MiB
            conn.execute("INSERT INTO big VALUES (%s, %s)", (i, os.urandom(1 << 20)))
    del big
    large = _peak_rss(shop, "pull", *shop.args("--repo", str(shop.repo)))
    assert large < small + (40 << 20), (small >> 20, large >> 20)
