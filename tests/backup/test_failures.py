"""Bad input and concurrent runs: one clear line, a non-zero exit, nothing lost."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket

import pytest

from tests.backup.conftest import moto_for
from tests.backup.helpers import backup, backup_ok, make_odoo, store_for
from tests.helpers import one_error_line
from tests.odoo_data import Shape


@pytest.fixture(scope="module")
def odoo(postgres, tmp_path_factory):
    filestore = tmp_path_factory.mktemp("fs") / "filestore"
    make_odoo(postgres, "odoo_failures", filestore, Shape.small(), seed=5)
    return "odoo_failures", filestore


def test_a_missing_repository_is_one_clear_line(backend, env):
    result = backup(env, "list", "--repo", backend)
    assert result.returncode == 2
    assert "no repository at" in one_error_line(result)


def test_init_twice_changes_nothing(backend, env, request):
    backup_ok(env, "init", "--repo", backend)
    config = store_for(backend, moto_for(backend, request)).get("config.json")
    result = backup(env, "init", "--repo", backend)
    assert result.returncode == 1
    assert "already a repository" in one_error_line(result)
    assert store_for(backend, moto_for(backend, request)).get("config.json") == config


def test_another_format_version_is_refused(backend, env, request):
    backup_ok(env, "init", "--repo", backend)
    store = store_for(backend, moto_for(backend, request))
    config = json.loads(store.get("config.json"))
    store.put("config.json", json.dumps({**config, "version": 4}).encode())
    result = backup(env, "list", "--repo", backend)
    assert result.returncode == 1
    assert "is a version 4 repository; this odbox-backup reads versions 1 to 3 only" in (
        one_error_line(result)
    )


def test_unknown_and_corrupt_snapshots_are_one_clear_line(backend, env, request, odoo):
    name, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    backup_ok(env, "run", "--repo", backend, "--db", name, "--filestore", str(filestore))
    result = backup(env, "show", "--repo", backend, "20990101T000000Z-00000000")
    assert result.returncode == 2
    assert "no snapshot 20990101T000000Z-00000000" in one_error_line(result)
    store = store_for(backend, moto_for(backend, request))
    [key] = list(store.list("snapshots"))
    store.put(key, b"\x28\xb5\x2f\xfd garbage")
    result = backup(env, "show", "--repo", backend, key.rsplit("/", 1)[1])
    assert result.returncode == 1
    assert "is not authenticated" in one_error_line(result)
    result = backup(env, "show", "--repo", backend, "latest")
    assert result.returncode == 1 and "holds no snapshot yet" in result.stderr


def test_a_failing_pg_dump_writes_no_snapshot(backend, env, request, odoo):
    _, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    result = backup(env, "run", "--repo", backend, "--db", "no_such_db", "--filestore",
                    str(filestore))  # fmt: skip
    assert result.returncode == 1
    assert 'database "no_such_db" does not exist' in one_error_line(result)
    store = store_for(backend, moto_for(backend, request))
    assert list(store.list("snapshots")) == [] and list(store.list("locks")) == []


def test_a_live_lock_makes_a_second_run_exit_4_and_a_stale_one_is_removed(
    backend, env, request, odoo
):
    name, filestore = odoo
    backup_ok(env, "init", "--repo", backend)
    store = store_for(backend, moto_for(backend, request))
    run = ["run", "--repo", backend, "--db", name, "--filestore", str(filestore)]
    now = dt.datetime.now(dt.UTC).isoformat()  # a lock dated a day ahead would be stale
    live = {"host": socket.gethostname(), "pid": os.getpid(), "command": "odbox-backup run",
            "time": now, "repository": "x"}  # fmt: skip
    store.put("locks/other.json", json.dumps(live).encode())
    result = backup(env, *run)
    assert result.returncode == 4
    assert "is locked by `odbox-backup run`" in one_error_line(result)
    assert list(store.list("snapshots")) == []
    assert list(store.list("locks")) == ["locks/other.json"]

    dead = {**live, "pid": 2**22 + 17, "time": "2026-01-01T00:00:00+00:00"}  # no such pid
    store.put("locks/other.json", json.dumps(dead).encode())
    result = backup(env, *run)
    assert result.returncode == 0, result.stderr
    assert "removed a stale lock" in result.stderr
    assert list(store.list("locks")) == [] and len(list(store.list("snapshots"))) == 1
