"""`status`, `--metrics-file` and `notify`: what tells anyone that backups stopped."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import ClassVar

import pytest
from pyrage import x25519

from odbox_backup import locks
from tests.backup.conftest import moto_for
from tests.backup.helpers import AUTH_KEY_FILE, backup, backup_ok, backup_run, open_repo
from tests.helpers import one_error_line

OLD_ID = "20200102T030405Z-0a0b0c0d"


def status_json(env, repo, *extra):
    result = backup(env, "status", "--repo", repo, "--json", *extra)
    assert result.returncode in (0, 3), result.stderr
    return result.returncode, json.loads(result.stdout)


def plant_old_snapshot(repo, request, database="archived"):
    """An authentic snapshot of `database` dated 2020 (a box that stopped backing it up)."""
    repository = open_repo(repo, moto_for(repo, request))
    repository.write_snapshot({"id": OLD_ID, "version": 1, "time": "2020-01-02T03:04:05+00:00",
                               "host": "old-box", "mode": "hot", "source": "run",
                               "database": {"name": database, "objects": [], "size": 0,
                                            "format": "pg_dump-custom", "sha256": "", "wal": None,
                                            "pg_version": "15"},
                               "odoo": {"version": None, "modules": {}},
                               "filestore": {"files": [], "count": 0, "bytes": 0},
                               "totals": {"bytes": 0, "objects": 0, "new_objects": 0,
                                          "new_bytes": 0, "seconds": 0.0}})  # fmt: skip


def test_status_gives_the_newest_snapshot_of_each_database_and_max_age_finds_the_stale_one(
    odoo, backend, env, request, tmp_path
):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    backup_ok(env, "init", "--repo", backend)
    code, report = status_json(env, backend, "--max-age", "26h", *cache)
    assert code == 3 and report["newest"] == [] and report["stale"]  # none yet: stale

    backup_run(env, backend, odoo, *cache)
    plant_old_snapshot(backend, request)
    latest = backup_ok(env, "list", "--repo", backend, "--json")
    newest_id = json.loads(latest)[-1]["id"]
    code, report = status_json(env, backend, *cache)
    assert code == 0 and report["snapshots"] == 2
    by_db = {n["database"]: n for n in report["newest"]}
    assert by_db[odoo[0]]["snapshot"] == newest_id and by_db[odoo[0]]["age_seconds"] < 3600
    assert by_db["archived"]["snapshot"] == OLD_ID
    assert report["last"]["run"]["ok"] and report["last"]["run"]["snapshot"] == newest_id

    result = backup(env, "status", "--repo", backend, "--max-age", "26h", *cache)
    assert result.returncode == 3
    assert "backups are stale: the newest snapshot of database archived" in result.stderr
    assert odoo[0] not in result.stderr  # the database backed up today is not stale
    assert backup(env, "status", "--repo", backend, "--max-age", "3650d", *cache).returncode == 0
    bad = backup(env, "status", "--repo", backend, "--max-age", "soon")
    assert bad.returncode == 2 and "26h" in one_error_line(bad)


def test_status_of_an_encrypted_repository_without_identity_ages_the_newest_of_all(
    odoo, backend, env, request, tmp_path
):
    key = x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(f"{key}\n")
    backup_ok(env, "init", "--repo", backend, "--recipient", str(key.to_public()))
    plant_old_snapshot(backend, request)
    code, report = status_json(env, backend, "--max-age", "26h")
    assert code == 3 and report["newest"][0]["database"] is None
    backup_run(env, backend, odoo)
    code, report = status_json(env, backend, "--max-age", "26h")
    assert code == 0 and [n["database"] for n in report["newest"]] == [None]
    # with the identity, the databases are told apart (and the stale one found again)
    code, report = status_json(env, backend, "--max-age", "26h", "--identity",
                               str(tmp_path / "key.txt"))  # fmt: skip
    assert code == 3 and {n["database"] for n in report["newest"]} == {odoo[0], "archived"}


def test_status_names_the_lock_holder_and_a_failed_run(odoo, backend, env, request, tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    backup_ok(env, "init", "--repo", backend)
    repository = open_repo(backend, moto_for(backend, request))
    with locks.exclusive(repository.store, "odbox-backup run", repository.config.id):
        out = backup_ok(env, "status", "--repo", backend, *cache)
        assert f"locked: `odbox-backup run` on {socket.gethostname()} (pid {os.getpid()})" in out
        held = backup(env, "run", "--repo", backend, "--db", odoo[0], "--filestore",
                      str(odoo[2]), *cache)  # fmt: skip
        assert held.returncode == 4
    out = backup_ok(env, "status", "--repo", backend, *cache)
    assert "not locked" in out
    assert "last run: FAILED (exit 4)" in out and "is locked by" in out
    _code, report = status_json(env, backend, *cache)
    assert report["last"]["run"]["exit_code"] == 4 and report["locks"] == []


def _metrics(path: Path) -> dict[tuple[str, str], float]:
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("odbox_backup_"):
            name, _, value = line.rpartition(" ")
            metric, _, labels = name.partition("{")
            command = labels.split('command="')[1].split('"')[0]
            values[(metric.removeprefix("odbox_backup_"), command)] = float(value)
    return values


def test_metrics_file_after_run_verify_and_prune_keeps_the_last_success_through_a_failure(
    odoo, backend, env, tmp_path
):
    metrics = tmp_path / "textfile" / "odbox-backup.prom"
    metrics.parent.mkdir()
    flag = ["--metrics-file", str(metrics)]
    backup_ok(env, "init", "--repo", backend)
    before = time.time()
    backup_run(env, backend, odoo, *flag)
    values = _metrics(metrics)
    assert values[("last_success", "run")] == 1 and values[("snapshots", "run")] == 1
    assert values[("last_bytes_added", "run")] > 10_000
    assert values[("last_success_timestamp_seconds", "run")] >= int(before)
    assert values[("last_duration_seconds", "run")] > 0
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644  # node_exporter reads it as its user
    assert AUTH_KEY_FILE.read_text().split(":")[-1].strip() not in metrics.read_text()

    backup_ok(env, "verify", "--repo", backend, "--read-data", *flag)
    backup_ok(env, "prune", "--repo", backend, "--keep-last", "1", *flag)
    values = _metrics(metrics)
    assert values[("last_bytes_read", "verify")] > 10_000
    assert values[("snapshots", "prune")] == 1 and ("last_success", "run") in values

    success = values[("last_success_timestamp_seconds", "run")]
    failed = backup(env, "run", "--repo", backend, "--db", "no_such_db", "--filestore",
                    str(odoo[2]), *flag)  # fmt: skip
    assert failed.returncode == 1
    values = _metrics(metrics)
    assert values[("last_success", "run")] == 0 and values[("last_exit_code", "run")] == 1
    assert values[("last_success_timestamp_seconds", "run")] == success  # kept
    assert values[("last_failure_timestamp_seconds", "run")] >= success
    assert values[("last_success", "verify")] == 1  # the other commands' lines are kept
    assert not [p for p in metrics.parent.iterdir() if p != metrics]  # no temp file left


@pytest.fixture
def node_exporter(tmp_path):
    """The real node_exporter, reading a textfile folder, on 127.0.0.1."""
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if binary is None:
        pytest.skip("node_exporter is not installed (.ci/debian-packages.txt names it)")
    folder = tmp_path / "textfile"
    folder.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
         "--collector.textfile", f"--collector.textfile.directory={folder}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("node_exporter did not start") from None
            time.sleep(0.1)
    try:
        yield folder, url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_node_exporter_reads_the_metrics_without_error(odoo, local_env, tmp_path, node_exporter):
    folder, url = node_exporter
    repo = str(tmp_path / "repo")
    backup_ok(local_env, "init", "--repo", repo)
    backup_run(local_env, repo, odoo, "--metrics-file", str(folder / "odbox-backup.prom"))
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
        scraped = response.read().decode()
    assert "node_textfile_scrape_error 0" in scraped
    assert f'odbox_backup_snapshots{{command="run",repository="{repo}"}} 1' in scraped
    assert 'odbox_backup_last_success{command="run"' in scraped


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_notify_posts_to_a_webhook_read_from_a_file_and_mails_through_sendmail(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        secret = "T0KEN-s3cret"
        url_file = tmp_path / "webhook-url"
        url_file.write_text(f"http://127.0.0.1:{server.server_port}/hooks/{secret}\n")
        # sendmail's stand-in keeps what it was given (tests/backup/README.md)
        mailbox = tmp_path / "mailbox"
        sendmail = tmp_path / "sendmail"
        sendmail.write_text(f'#!/bin/sh\necho "$@" > {mailbox}.argv\ncat > {mailbox}\n')
        sendmail.chmod(0o755)
        env = {**os.environ, "PATH": f"/nonexistent:{os.environ['PATH']}"}
        result = backup(env, "notify", "odbox-backup-hot.service", "--webhook-url-file",
                        str(url_file), "--mail-to", "admin@example.com", "--sendmail",
                        str(sendmail))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert secret not in result.stdout + result.stderr
        ((path, body),) = _Hook.received
        assert path == f"/hooks/{secret}"
        message = json.loads(body)
        assert message["unit"] == "odbox-backup-hot.service"
        assert message["text"].startswith(
            f"odbox-backup-hot.service failed on {socket.gethostname()}"
        )
        mail = mailbox.read_text()
        assert (
            "To: admin@example.com" in mail and "Subject: odbox-backup-hot.service failed" in mail
        )
        assert Path(f"{mailbox}.argv").read_text().split() == ["-t", "-oi"]

        url_file.write_text(f"http://127.0.0.1:{server.server_port}/gone/{secret}\n")
        server.RequestHandlerClass = _Refusing
        failed = backup(env, "notify", "x.service", "--webhook-url-file", str(url_file))
        assert failed.returncode == 1
        line = one_error_line(failed)
        assert "HTTP 500" in line and str(url_file) in line and secret not in line
    finally:
        server.shutdown()


class _Refusing(_Hook):
    def do_POST(self) -> None:
        self.send_response(500)
        self.end_headers()


def test_a_forged_or_replaced_newest_snapshot_never_makes_backups_look_fresh(
    odoo, backend, env, request, tmp_path
):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    backup_ok(env, "init", "--repo", backend)
    plant_old_snapshot(backend, request, database=odoo[0])
    store = open_repo(backend, moto_for(backend, request)).store
    forged = dt_now_id()  # dated now: it would be the newest
    store.put(f"snapshots/{forged}", b"odbox-auth-v1 " + b"0" * 64 + b"\n" + b"{}")
    code, report = status_json(env, backend, "--max-age", "26h", *cache)
    assert code == 3 and report["unauthenticated"] == [forged]
    assert [n["snapshot"] for n in report["newest"]] == [OLD_ID]

    backup_run(env, backend, odoo)
    code, report = status_json(env, backend, "--max-age", "26h", *cache)  # now in the cache
    assert code == 0
    real = report["newest"][0]["snapshot"]
    store.put(f"snapshots/{real}", store.get(f"snapshots/{real}")[:-5] + b"xxxxx")
    code, report = status_json(env, backend, "--max-age", "26h", *cache)
    assert code == 3 and real in report["unauthenticated"]
    assert [n["snapshot"] for n in report["newest"]] == [OLD_ID]


def dt_now_id() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-0badc0de"
