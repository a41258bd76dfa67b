"""k8s-migrate against the emulated cluster: the real console script, the official client.

The "cluster" is tests/k8s_migrate/emulator.py: its Postgres pod runs pg_dump
against the test PostgreSQL, and the PVC is a temp folder holding Odoo's data
folder (`filestore/<db>/…`). What arrives is checked by restoring it with
odbox-backup (or psql, for the zip) and comparing every table and file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psycopg
import pytest

from odbox_common.console import human_size
from tests.backup.helpers import db_dsn, odoo_state
from tests.helpers import one_error_line
from tests.k8s_migrate.emulator import V4, ExecCall
from tests.k8s_migrate.shop import (
    ANNOTATION,
    K8S_MIGRATE,
    NS,
    ODBOX_BACKUP,
    PULLING,
    Shop,
    changes,
    is_dump,
    is_tar,
)

AUDITED = Path(__file__).with_name("audited.py")


def _audited(
    args: list[str], env: dict[str, str], cwd: Path, log: Path
) -> tuple[subprocess.CompletedProcess[str], set[tuple[str, bool]], int]:
    """Run `k8s-migrate ARGS` under audited.py (its record in `log`): every file it opened
    (path, for writing), each recorded by the process's own audit hook as it opened it, and
    its peak memory."""
    done = subprocess.run([sys.executable, str(AUDITED), str(log), *args], cwd=cwd, env=env,
                          text=True, capture_output=True, timeout=300)  # fmt: skip
    opened: set[tuple[str, bool]] = set()
    peak = 0
    for line in log.read_text().splitlines():
        kind, _, value = line.partition(" ")
        if kind == "peak":
            peak = int(value)
        else:
            opened.add((value, kind == "W"))
    log.unlink()
    return done, opened, peak


def test_pull_into_a_repository_restores_every_row_and_file(shop: Shop) -> None:
    source = odoo_state(shop.dsn, shop.filestore)
    work, tmp, journal = shop.tmp / "work", shop.tmp / "tmp", shop.tmp / "cache" / "k8s-migrate"
    work.mkdir()
    done, opened, _ = _audited(["pull", *shop.args("--repo", str(shop.repo))], shop.env, work,
                                shop.tmp / "opens.log")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(shop.snapshots()) == 1
    assert "deleted helper pod" in done.stdout + done.stderr
    shop.assert_put_back(replicas=0)  # Odoo stays down: the box takes over from here
    annotations = shop.annotations()  # the count, for a later --scale-back or a human
    assert annotations[ANNOTATION] == "2" and PULLING not in annotations
    # Streams stay streams: no tarball or dump file anywhere but the repository's objects,
    # its lock and manifest, and the journal, not even for a moment; nothing at all in the
    # working folder or TMPDIR. Every open is in the audit (a file open for a transfer
    # cannot slip through), and the audit does see the repository's own writes.
    written = {path for path, writing in opened if writing}
    own = tuple(f"{shop.repo}/{folder}/"
                for folder in ("objects", "packs", "index", "locks", "snapshots"))  # fmt: skip
    assert any(path.startswith(own) for path in written), opened
    outside = {path for path in written if not path.startswith((*own, f"{journal}/"))}
    assert outside == set(), outside
    assert {path for path, _ in opened if path.startswith((f"{work}/", f"{tmp}/"))} == set()
    assert list(tmp.iterdir()) == [] and list(work.iterdir()) == []
    assert shop.restore(f"{shop.db}_restored", shop.tmp / "restored") == source

    manifest = json.loads(subprocess.run(
        [str(ODBOX_BACKUP), "show", "latest", "--repo", str(shop.repo), "--json"],
        capture_output=True, text=True, env=shop.env, check=True).stdout)  # fmt: skip
    assert manifest["source"] == "k8s-migrate" and manifest["mode"] == "cold"
    assert manifest["tags"] == ["k8s-migrate"]  # prune --keep-tag k8s-migrate keeps it
    assert manifest["origin"] == f"test/{NS}/odoo"
    assert manifest["odoo"]["modules"]["base"].startswith("17.0")


def test_scale_back_brings_odoo_back(shop: Shop) -> None:
    done = shop.pull("--scale-back")
    assert done.returncode == 0, done.stderr
    shop.assert_put_back(replicas=2)
    assert shop.annotations().keys().isdisjoint({ANNOTATION, PULLING})  # noted, then removed
    noted = [r for r in shop.k8s.requests if r.method == "PATCH" and r.path.endswith("/odoo")]
    assert [r.content_type for r in noted] == ["application/strategic-merge-patch+json"] * 2


def test_odoo_left_at_0_on_purpose_stays_there_until_scale_back(shop: Shop) -> None:
    assert shop.pull().returncode == 0
    assert shop.k8s.replicas(NS, "odoo") == 0 and shop.annotations()[ANNOTATION] == "2"
    shop.k8s.fail_exec(is_dump, exit_code=1, times=1)
    failed = shop.pull()  # found at 0 on purpose: put back at 0, not at the noted 2
    assert failed.returncode == 1 and "as an earlier pull left it" in failed.stdout
    shop.assert_put_back(replicas=0)
    assert shop.annotations()[ANNOTATION] == "2"
    done = shop.pull("--scale-back")
    assert done.returncode == 0, done.stderr
    shop.assert_put_back(replicas=2)
    assert ANNOTATION not in shop.annotations()


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


def _db_size(shop: Shop) -> str:
    size = shop.postgres.psql("SELECT pg_database_size(current_database())", db=shop.db)
    return human_size(int(size))


def test_plan_reads_only_and_shows_the_sizes(shop: Shop) -> None:
    db_sizes = {_db_size(shop)}
    done = shop.migrate("plan", *shop.args("--repo", str(shop.repo)))
    db_sizes.add(_db_size(shop))  # autovacuum may add a page meanwhile
    assert done.returncode == 0, done.stderr
    steps = dict(re.findall(r"^ +(\d+)\. (.*)$", done.stdout, flags=re.M))
    assert list(steps) == ["1", "2", "3", "4", "5"], done.stdout
    assert steps["1"].startswith("scale deployment shop/odoo from 2 to 0")
    assert f"run `pg_dump {shop.db}` in pod postgres-0 (container postgres;" in steps["3"]
    assert any(f"; database {size})" in steps["3"] for size in db_sizes), (steps, db_sizes)
    files = sum(1 for p in shop.filestore.rglob("*") if p.is_file())
    du = subprocess.run(["du", "-s", "-k", "."], cwd=shop.filestore, capture_output=True,
                        text=True, check=True)  # fmt: skip
    kib = int(du.stdout.split()[0])
    assert (
        f"stream a tar of filestore/{shop.db}/ ({files} files, {human_size(kib * 1024)})"
        in (steps["4"])
    )
    assert changes(shop.k8s.requests) == [], shop.k8s.requests
    assert shop.k8s.replicas(NS, "odoo") == 2 and shop.snapshots() == []
    as_json = json.loads(
        shop.migrate("plan", *shop.args("--repo", str(shop.repo), "--json")).stdout
    )
    assert as_json["schema"] == 1 and as_json["dry_run"] is True
    assert len(as_json["changes"]) >= 5


@pytest.mark.parametrize(
    "fault",
    ["pg_dump fails", "dump cut", "dump without status", "tar cut", "tar fails",
     "helper pending", "scale forbidden"],
)  # fmt: skip
def test_a_failure_writes_nothing_and_puts_the_cluster_back(shop: Shop, fault: str) -> None:
    k8s = shop.k8s
    extra = ["--repo", str(shop.repo)]
    if fault == "pg_dump fails":
        # as pg_dump 16 says it: the error, then its detail, then more (the last line is
        # the least useful one)
        k8s.fail_exec(is_dump, exit_code=1, after_bytes=20_000, stderr=(
            b"pg_dump: error: Dumping the contents of table \"res_partner\" failed: "
            b"PQgetResult() failed.\n"
            b"pg_dump: detail: Error message from server: server closed the connection "
            b"unexpectedly\n"
            b"pg_dump: detail: Command was: COPY public.res_partner (id, name) TO stdout;\n"
        ))  # fmt: skip
        said = (
            "failed with exit status 1: pg_dump: error: Dumping the contents of table "
            '"res_partner" failed: PQgetResult() failed.; pg_dump: detail: Error message from '
            "server: server closed the connection unexpectedly; pg_dump: detail: Command was"
        )
    elif fault == "dump cut":
        k8s.drop_exec(is_dump, after_bytes=50_000)
        said = "the connection dropped after 50000 bytes"
    elif fault == "dump without status":  # every byte, a clean close, but no exit status
        k8s.close_exec(is_dump)
        extra = ["--odoo-zip", str(shop.tmp / "odoo.zip")]  # and no zip, no temp file stays
        said = "the stream ended after"
    elif fault == "tar cut":
        k8s.drop_exec(is_tar, after_bytes=300_000)
        said = f"the tar of filestore/{shop.db}/ in helper pod shop/k8s-migrate-"
    elif fault == "tar fails":
        k8s.fail_exec(is_tar, exit_code=2, stderr=(  # GNU tar's two lines
            b"tar: ./ab: Cannot open: Permission denied\n"
            b"tar: Exiting with failure status due to previous errors\n"
        ))  # fmt: skip
        said = "failed with exit status 2: tar: ./ab: Cannot open: Permission denied"
    elif fault == "helper pending":
        k8s.keep_pending()
        extra += ["--timeout", "3"]
        said = "stayed Pending for 3 s"
    else:
        k8s.forbid("patch", "deployments/scale")
        said = "403 Forbidden"
    done = shop.migrate("pull", *shop.args(*extra))
    assert done.returncode == 1, done.stdout + done.stderr
    line = one_error_line(done)
    assert said in line, done.stderr
    assert "Exiting with failure status" not in line
    if fault == "dump without status":
        assert "without the command's exit status" in line
        assert [r.outcome for r in k8s.exec_log if is_dump(ExecCall(r.namespace, r.pod,
                r.container, r.command))] == ["closed"]  # fmt: skip
    if fault == "tar cut":  # what was cut, and that a re-run picks up from there
        assert "connection dropped" in line and "the same pull run again resumes" in line
    assert shop.snapshots() == [] and not (shop.tmp / "odoo.zip").exists()
    assert [p.name for p in shop.tmp.iterdir() if p.name.startswith(".odoo.zip")] == []
    shop.assert_put_back(replicas=2)
    assert shop.annotations().keys().isdisjoint({ANNOTATION, PULLING})


def test_a_refused_scale_back_is_said_once_with_the_command(shop: Shop) -> None:
    """The scale-down works, the dump fails, then the scale-back is refused (403): no retries
    of a refusal, one error line that says Odoo was NOT put back and how to do it."""
    shop.k8s.fail_exec(is_dump, exit_code=1, stderr=(
        b"pg_dump: error: connection to server on socket \"/run/postgresql/.s.PGSQL.5432\" "
        b"failed: connection lost\npg_dump: hint: is the server running?\n"
    ))  # fmt: skip
    shop.k8s.forbid("patch", "deployments/scale", after=1)
    done = shop.pull()
    assert done.returncode == 1, done.stdout + done.stderr
    line = one_error_line(done)
    assert "failed: connection lost; pg_dump: hint: is the server running?" in line
    assert "deployment shop/odoo was NOT put back to 2 replicas (" in line and "403" in line
    assert line.endswith("run `kubectl -n shop scale deployment odoo --replicas=2`")
    assert (done.stdout + done.stderr).count("NOT put back") == 1
    scales = [r for r in shop.k8s.requests
              if r.method == "PATCH" and r.path.endswith("/scale")]  # fmt: skip
    assert len(scales) == 2  # down, and one refused try back up
    assert shop.helpers_left() == [] and shop.k8s.replicas(NS, "odoo") == 0
    assert shop.annotations()[ANNOTATION] == "2"  # kept: the next pull puts it back
    assert shop.annotations()[PULLING] == "stopped"  # no owner: any host takes over

    # A pull that works but cannot delete its helper pod: the snapshot stays, exit 1.
    shop.k8s.clear_faults()
    shop.k8s.forbid("delete", "pods")
    done = shop.pull("--scale-back")
    assert done.returncode == 1, done.stdout + done.stderr
    line = one_error_line(done)
    (helper,) = shop.helpers_left()
    assert f"the pull worked, but the helper pod shop/{helper} was NOT deleted (" in line
    assert line.endswith(f"run `kubectl -n shop delete pod {helper}`")
    assert len(shop.snapshots()) == 1 and shop.k8s.replicas(NS, "odoo") == 2


def test_an_interrupted_pull_that_cannot_scale_back_says_so(shop: Shop) -> None:
    shop.k8s.keep_pending()
    shop.k8s.forbid("patch", "deployments/scale", after=1)
    child = subprocess.Popen([str(K8S_MIGRATE), "pull", *shop.args("--repo", str(shop.repo))],
                             env=shop.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    # its helper pod made (Pending), then Odoo scaled down: the pull waits for the helper
    while not (shop.helpers_left() and shop.k8s.replicas(NS, "odoo") == 0):
        assert time.monotonic() < deadline and child.poll() is None, child.communicate()
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    line = one_error_line(subprocess.CompletedProcess(child.args, 130, out, err))
    assert "error: interrupted; no snapshot was written, but deployment shop/odoo was NOT put " in (
        line
    )
    assert line.endswith("run `kubectl -n shop scale deployment odoo --replicas=2`")
    assert shop.helpers_left() == [] and shop.k8s.replicas(NS, "odoo") == 0


def test_ctrl_c_during_the_dump_stream_puts_the_cluster_back(shop: Shop) -> None:
    started = shop.tmp / "dump-started"
    shop.add_fake_dump_pod("slow-0", (
        "import sys, time\n"
        "sys.stdout.buffer.write(bytes(range(256)) * 4096); sys.stdout.flush()\n"
        f"open({str(started)!r}, 'w').close(); time.sleep(60)\n"
    ))  # fmt: skip
    args = shop.args("--repo", str(shop.repo))
    args[args.index("--db-pod") + 1] = "slow-0"
    child = shop.pull_until(args, started)
    # `started` exists once the emulator has sent most of the megabyte: the dump is streaming
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted; the cluster was put back" in err
    assert shop.snapshots() == []
    shop.assert_put_back(replicas=2)
    dumps = [r for r in shop.k8s.exec_log if r.pod == "slow-0" and is_dump(ExecCall(
        r.namespace, r.pod, r.container, r.command))]  # fmt: skip
    assert [(r.outcome, r.stdout_bytes > 0) for r in dumps] == [("client left", True)]


def test_a_pull_killed_with_sigkill_is_put_back_by_the_next_one(shop: Shop) -> None:
    """SIGKILL leaves Odoo at 0 and a helper pod: the annotation keeps the count, `plan`
    shows both, and the next pull deletes the pod and puts the count back. That pull names
    a wrong --filestore-path: with Odoo at 0, the helper pod finds it before the dump."""
    shop.k8s.keep_pending()  # the killed pull's helper pod stays Pending: it is left over
    child = subprocess.Popen([str(K8S_MIGRATE), "pull", *shop.args("--repo", str(shop.repo))],
                             env=shop.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    # the helper pod is made first, then Odoo scaled down (the helper waits for its room)
    while not (shop.helpers_left() and shop.k8s.replicas(NS, "odoo") == 0):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    child.kill()
    child.wait()
    (left,) = shop.helpers_left()
    assert shop.k8s.replicas(NS, "odoo") == 0
    annotations = shop.annotations()
    assert annotations[ANNOTATION] == "2"
    owner = json.loads(annotations[PULLING])  # the lease names the killed pull
    assert owner["pid"] == child.pid and owner["host"] == socket.gethostname()
    shop.k8s.clear_faults()

    plan = shop.migrate("plan", *shop.args("--repo", str(shop.repo)))
    assert plan.returncode == 0, plan.stderr
    assert f"delete the helper pods left by a pull that was killed: {left}" in plan.stdout
    assert "is already at 0, left there by a pull that was stopped; its annotation" in plan.stdout
    assert "scale odoo back to 2" not in plan.stdout and "--scale-back restores 2" in plan.stdout

    before = len(shop.k8s.exec_log)
    done = shop.pull("--filestore-path", "filestore/nope")
    assert done.returncode == 2, done.stdout + done.stderr
    warning, error = done.stderr.strip().splitlines()  # the killed pull's lock, then the error
    assert "warning: removed a stale lock: `k8s-migrate pull`" in warning
    assert error.endswith(  # seen by the helper pod: Odoo is at 0
        "error: no folder filestore/nope in PVC odoo-data (it holds: filestore/); "
        f"filestore/{shop.db} is there: pass --filestore-path filestore/{shop.db}"
    )
    assert f"deleted helper pods left by a pull that was killed: {left}" in done.stdout
    assert f"(pid {child.pid} on this host since " in done.stdout and "gone: taking over" in (
        done.stdout
    )
    assert f"{ANNOTATION} says 2: 2 is taken as its replica count" in done.stdout
    assert not any(is_dump(ExecCall(r.namespace, r.pod, r.container, r.command))
                   for r in shop.k8s.exec_log[before:])  # fmt: skip
    shop.assert_put_back(replicas=2)
    assert shop.annotations().keys().isdisjoint({ANNOTATION, PULLING})


def test_a_wrong_filestore_path_fails_before_anything_changes(shop: Shop) -> None:
    done = shop.pull("--filestore-path", "filestore/nope")
    assert done.returncode == 2, done.stdout + done.stderr
    assert one_error_line(done).endswith(
        "no folder filestore/nope in PVC odoo-data (it holds: filestore/); "
        f"filestore/{shop.db} is there: pass --filestore-path filestore/{shop.db}"
    )
    assert changes(shop.k8s.requests) == []
    plan = shop.migrate("plan", *shop.args("--repo", str(shop.repo), "--filestore-path", "x"))
    assert plan.returncode == 2 and "no folder x in PVC odoo-data" in one_error_line(plan)


def test_the_db_container_defaults_as_kubectl_picks_it(shop: Shop) -> None:
    """A two-container pod: its default-container annotation, else its first container."""
    shop.add_db_pod("pg-1", ["metrics", "postgres"],
                    {"kubectl.kubernetes.io/default-container": "postgres"})  # fmt: skip
    shop.add_db_pod("pg-2", ["postgres", "metrics"], {})
    for pod, command in (("pg-1", "pull"), ("pg-2", "plan")):
        args = shop.args("--repo", str(shop.repo))
        del args[args.index("--db-container") : args.index("--db-container") + 2]
        args[args.index("--db-pod") + 1] = pod
        done = shop.migrate(command, *args, "--scale-back")
        assert done.returncode == 0, done.stderr
        assert {r.container for r in shop.k8s.exec_log if r.pod == pod} == {"postgres"}
    assert len(shop.snapshots()) == 1


def test_a_malformed_kubeconfig_is_one_usage_line(shop: Shop) -> None:
    for name, text, said in [
        ("broken", "apiVersion: v1\nclusters: [unclosed\n", "it is not valid YAML ("),
        ("a-list", "- just\n- a list\n", "it is not a kubeconfig ("),
    ]:
        path = shop.tmp / name
        path.write_text(text)
        for command in ("plan", "pull"):
            done = shop.migrate(command, *shop.args("--repo", str(shop.repo), "--kubeconfig",
                                                    str(path)))  # fmt: skip
            assert done.returncode == 2, done.stderr
            assert f"cannot use the kubeconfig {path}: {said}" in one_error_line(done)
    assert shop.k8s.requests == []


def test_a_bad_output_fails_before_the_cluster_is_touched(shop: Shop) -> None:
    """pull and plan check --repo and --odoo-zip the same way, before any request."""
    cases = [
        ("pull", ["--odoo-zip", "/proc/out.zip"], 2, "cannot write /proc/out.zip: "),
        ("plan", ["--odoo-zip", "/proc/out.zip"], 2, "cannot write /proc/out.zip: "),
        ("plan", ["--odoo-zip", "nodir/out.zip"], 2, "nodir is not a folder"),
        ("pull", ["--repo", "nonexistent"], 2, "no repository at nonexistent"),
        ("plan", ["--repo", "nonexistent"], 2, "no repository at nonexistent"),
        (
            "pull",
            ["--odoo-zip", "/tmp"],
            2,
            "/tmp is a folder: give the zip's file name, e.g. /tmp/odoo.zip",
        ),
    ]
    for command, output, code, said in cases:
        done = shop.migrate(command, *shop.args(*output), cwd=shop.tmp)
        assert done.returncode == code, (command, output, done.stderr)
        assert said in one_error_line(done), (command, output)
    assert shop.k8s.requests == [] and shop.k8s.replicas(NS, "odoo") == 2
    plan = shop.migrate("plan", *shop.args("--odoo-zip", str(shop.tmp / "out.zip")))
    assert plan.returncode == 0, plan.stderr
    assert [p.name for p in shop.tmp.iterdir() if "out.zip" in p.name] == []


def test_a_dump_with_every_byte_value_arrives_intact(shop: Shop) -> None:
    """pg_dump -Fc writes bytea as hex: a fake pg_dump sends every byte value instead."""
    data = bytes(range(256)) * 8192 + bytes(range(255, -1, -1)) * 17  # 2 MiB and a tail
    shop.add_fake_dump_pod("raw-0", (
        "import sys\n"
        "sys.stdout.buffer.write(bytes(range(256)) * 8192 + bytes(range(255, -1, -1)) * 17)\n"
    ))  # fmt: skip
    args = shop.args("--repo", str(shop.repo))
    args[args.index("--db-pod") + 1] = "raw-0"
    done = shop.migrate("pull", *args)
    assert done.returncode == 0, done.stderr
    from odbox_backup.repository import AuthKey, Repository
    from odbox_backup.store import open_store

    key = AuthKey.load(Path(shop.env["ODBOX_BACKUP_AUTH_KEY_FILE"]))
    repo = Repository.open(open_store(str(shop.repo)), key=key)
    database = repo.read_snapshot(repo.resolve("latest"))["database"]
    stored = b"".join(repo.get_object(name) for name in database["objects"])
    assert len(stored) == database["size"] == len(data)
    assert stored == data


def test_a_server_that_speaks_only_v4_works(shop: Shop) -> None:
    """A server before Kubernetes 1.30 answers the client's v5 offer with v4: no way to close
    stdin, so tar's file list ends with its marker line."""
    shop.k8s.exec_protocols = (V4,)
    source = odoo_state(shop.dsn, shop.filestore)
    done = shop.pull()
    assert done.returncode == 0, done.stderr
    log = shop.k8s.exec_log
    assert {r.protocol for r in log} == {V4} and any(is_tar(ExecCall(r.namespace, r.pod,
            r.container, r.command)) for r in log)  # fmt: skip
    assert shop.restore(f"{shop.db}_restored", shop.tmp / "restored") == source


def test_help_names_every_exit_code_and_option(shop: Shop) -> None:
    top = " ".join(shop.migrate("--help").stdout.split())  # as the terminal's width wraps it
    assert "130 interrupted" in top and "2 usage (" in top
    plan = shop.migrate("plan", "--help").stdout
    assert "-n, --namespace NS" in plan and "<str>" not in plan
    assert re.search(r"--scale-back +\S", plan), plan


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_sigterm_and_sighup_put_the_cluster_back(shop: Shop, signum: int) -> None:
    shop.k8s.keep_pending()  # its helper pod stays Pending: the pull waits for it
    child = subprocess.Popen([str(K8S_MIGRATE), "pull", *shop.args("--repo", str(shop.repo))],
                             env=shop.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    # its helper pod made (Pending), then Odoo scaled down: the pull waits for the helper
    while not (shop.helpers_left() and shop.k8s.replicas(NS, "odoo") == 0):
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
    # The tar's line gives the size still to send, not the whole filestore's.
    said = re.search(r"tar of filestore/\S+ in helper pod: (\d+) files? \((\d+) already in "
                     r"the repository\) \(([\d.]+ \w+)\)", second.stdout)  # fmt: skip
    assert said and int(said[2]) == int(kept[1]), second.stdout
    kib = int(subprocess.run(["du", "-s", "-k", "."], cwd=shop.filestore, capture_output=True,
                             text=True, check=True).stdout.split()[0])  # fmt: skip
    assert said[3] != human_size(kib * 1024), (said[3], second.stdout)
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
    bad_user = shop.args("--repo", str(shop.repo), "--db-user", "nobody")
    for args, said in [
        (bad_db, 'database "missing_db" does not exist in pod shop/postgres-0 (check --db-name)'),
        (bad_user, 'role "nobody" does not exist in pod shop/postgres-0 (check --db-user)'),
    ]:
        done = shop.migrate("pull", *args)
        assert done.returncode == 2, done.stderr
        assert one_error_line(done).endswith(f"error: {said}")
    assert shop.k8s.replicas(NS, "odoo") == 2 and shop.annotations().get(PULLING) is None


def test_a_terminal_gets_progress_bars_for_the_dump_and_the_filestore(shop: Shop) -> None:
    import pexpect

    child = pexpect.spawn(str(K8S_MIGRATE), ["pull", *shop.args("--repo", str(shop.repo))],
                          env=shop.env, timeout=120, dimensions=(40, 160))  # fmt: skip
    child.expect(pexpect.EOF)
    child.close()
    screen = child.before.decode(errors="replace")
    assert child.exitstatus == 0, screen
    assert "━" in screen and "MiB" in screen  # rich's bars, with bytes done
    assert f"pg_dump {shop.db} in pod shop/postgres-0" in screen
    assert f"tar of filestore/{shop.db}/ in helper pod" in screen


def _peak_rss(shop: Shop, *args: str) -> int:
    """The peak resident memory (VmHWM) of one `k8s-migrate` process, as it read it itself
    at exit (audited.py): no sampling that could miss the peak.

    Not wait4's ru_maxrss: Linux carries it across fork and exec, so it would include this
    test process's own size (its emulator, its data)."""
    done, _, peak = _audited(list(args), shop.env, shop.tmp, shop.tmp / "opens.log")
    assert done.returncode == 0, done.stderr
    assert peak > 0
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


def test_memory_per_file_is_a_few_hundred_bytes(shop: Shop, tmp_path: Path) -> None:
    """15,000 more files cost at most 450 bytes each (their manifest entries and names):
    nothing is kept of a file once it is stored (tarfile would keep every TarInfo)."""
    few = _peak_rss(shop, "pull", *shop.args("--repo", str(shop.repo), "--scale-back"))
    for i in range(15_000):
        content = b"%d\n" % i
        name = hashlib.sha1(content).hexdigest()  # noqa: S324 (Odoo's file names)
        (shop.filestore / name[:2]).mkdir(exist_ok=True)
        (shop.filestore / name[:2] / name).write_bytes(content)
    other = tmp_path / "other"
    subprocess.run([str(ODBOX_BACKUP), "init", "--repo", str(other)],
                   env=shop.env, check=True, capture_output=True)  # fmt: skip
    many = _peak_rss(shop, "pull", *shop.args("--repo", str(other), "--scale-back"))
    assert many - few < 15_000 * 450, ((few >> 10), (many >> 10))
