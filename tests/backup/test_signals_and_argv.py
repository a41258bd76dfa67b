"""SIGTERM is Ctrl-C (systemctl stop, shutdown, TimeoutStartSec send it), no child's argv
holds the DSN's password (/proc/PID/cmdline is readable by every user), and pg_dump writes
into a pipe of 1 MiB.

pg_dump and pg_restore are stand-ins on --pg-bin: shell scripts that record what the real
tool would see (their argv from /proc/self/cmdline, whether PGPASSWORD is set, the size of
the pipe on their stdout) and then run the real one, or, for the kill, say they started
and wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.backup.helpers import (
    ODBOX_BACKUP,
    backup,
    backup_ok,
    backup_run,
    odoo_service,
    odoo_state,
    snapshot_then_change,
    stand_in,
)
from tests.helpers import one_error_line


def _wait_for(path, child, deadline=120):
    end = time.monotonic() + deadline
    while not path.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def test_sigterm_during_a_cold_backup_starts_odoo_again_and_releases_the_lock(
    odoo, local_env, tmp_path
):
    """`kill -TERM` of a `run --cold` during the dump exited 143, Odoo stayed stopped and the
    lock stayed."""
    env = local_env
    name, _, filestore = odoo
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    bin_ = tmp_path / "bin"
    started = tmp_path / "dump-started"
    stand_in(bin_, "pg_dump", f"touch {started}\nexec sleep 600\n")
    log, service = odoo_service(tmp_path)
    child = subprocess.Popen(
        [str(ODBOX_BACKUP), "run", "--repo", repo, "--db", name, "--filestore", str(filestore),
         "--cold", "--pg-bin", str(bin_), *service],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(started, child)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err
    assert log.read_text().split() == ["stop", "start"]
    backup_run(env, repo, odoo)  # the lock is free: no --wait needed


def _recording(folder, tool, real, record):
    """A stand-in for `tool` that appends its argv and whether it has PGPASSWORD to `record`,
    then runs the real one."""
    stand_in(folder, tool, f"tr '\\0' ' ' < /proc/$$/cmdline >> {record}\n"
             f'echo " PGPASSWORD=${{PGPASSWORD:-unset}}" >> {record}\n'
             f'exec {real} "$@"\n')  # fmt: skip


def test_no_child_has_the_dsn_password_in_its_argv(postgres, odoo, local_env, tmp_path):
    """pg_dump had `--dbname=… password=…` in /proc/<pid>/cmdline; so had pg_restore."""
    env = local_env
    name, dsn, filestore = odoo
    secret = "s3cret-not-in-argv"
    dsn_with_password = f"host={postgres.socket_dir} port={postgres.port} user=postgres " \
                        f"password={secret}"  # fmt: skip
    bin_ = tmp_path / "bin"
    record = tmp_path / "argv.txt"
    for tool in ("pg_dump", "pg_restore"):
        _recording(bin_, tool, postgres.bindir / tool, record)
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    backup_ok(env, "run", "--repo", repo, "--db", name, "--filestore", str(filestore),
              "--dsn", dsn_with_password, "--pg-bin", str(bin_))  # fmt: skip
    at_backup = odoo_state(dsn, filestore)
    backup_ok(env, "restore", "--repo", repo, "latest", "--db", name, "--filestore",
              str(filestore), "--dsn", dsn_with_password, "--pg-bin", str(bin_))  # fmt: skip
    assert odoo_state(dsn, filestore) == at_backup
    seen = record.read_text().splitlines()
    assert any("pg_dump" in line for line in seen) and any("pg_restore" in line for line in seen)
    assert all(secret not in line.split(" PGPASSWORD=")[0] for line in seen), seen
    [dump] = [line for line in seen if "pg_dump" in line]
    assert dump.endswith(f"PGPASSWORD={secret}")  # by the environment, which only it reads


def test_pg_dump_writes_into_a_pipe_of_one_mebibyte(postgres, odoo, local_env, tmp_path):
    """Linux's default 64 KiB pipe woke the run 16 times for each MiB of the dump, each a GIL
    hand-over beside the workers that compress and encrypt (a full backup at the bench's size
    spent 0.2 CPU s more for it, median of 5). The stand-in reads the size of the pipe it
    writes into, then runs the real pg_dump (the size is set before it starts: no race)."""
    name, _, filestore = odoo
    bin_ = tmp_path / "bin"
    seen = tmp_path / "pipe-size"
    probe = "import fcntl as f, sys; open(sys.argv[1], 'w').write(str(f.fcntl(1, f.F_GETPIPE_SZ)))"
    stand_in(
        bin_,
        "pg_dump",
        f'{sys.executable} -c "{probe}" {seen}\nexec {postgres.bindir / "pg_dump"} "$@"\n',
    )  # fmt: skip
    repo = str(tmp_path / "repo")
    backup_ok(local_env, "init", "--repo", repo)
    backup_ok(local_env, "run", "--repo", repo, "--db", name, "--filestore", str(filestore),
              "--pg-bin", str(bin_))  # fmt: skip
    assert int(seen.read_text()) == 1 << 20


def test_sigterm_before_the_swap_leaves_the_live_data_and_removes_what_it_made(
    postgres, odoo, local_env, tmp_path
):
    env = local_env
    name, dsn, filestore = odoo
    repo, _, before = snapshot_then_change(env, tmp_path, odoo)
    bin_ = tmp_path / "bin"
    started = tmp_path / "restore-started"
    stand_in(bin_, "pg_restore", f"touch {started}\nexec sleep 600\n")
    log, service = odoo_service(tmp_path)
    child = subprocess.Popen(
        [str(ODBOX_BACKUP), "restore", "--repo", repo, "latest", "--db", name, "--filestore",
         str(filestore), "--pg-bin", str(bin_), *service],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(started, child)
    os.kill(child.pid, signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert odoo_state(dsn, filestore) == before and not log.exists()
    assert postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}%'") == name
    assert [p.name for p in filestore.parent.iterdir()] == ["filestore"]
    again = backup(env, "restore", "--resume", "--db", name, "--filestore", str(filestore))
    assert again.returncode == 1 and "no interrupted restore" in one_error_line(again)
