"""`--json` on every odbox-backup command that reports a result (init, run, copy, import,
export, restore, drop-previous): stdout is one JSON document (`json.loads` of the whole of
it), with a `schema` version and every key always there, and the log lines a command says
without --json go to stderr instead."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from odbox_backup.swap import KILL_AT_STEP
from tests.backup.helpers import backup, odoo_service, odoo_state

SNAPSHOT_MADE = {"schema", "repository", "snapshot", "time", "host", "mode", "database", "tags",
                 "files", "bytes", "bytes_read", "bytes_added", "objects", "dump", "seconds",
                 "attachments"}  # fmt: skip
RESTORE = {"schema", "action", "repository", "snapshot", "database", "filestore", "previous",
           "files", "bytes", "attachments", "written", "unchanged"}  # fmt: skip


def document(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON document a --json command printed, which must be the whole of stdout."""
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert isinstance(parsed, dict) and parsed["schema"] == 1, result.stdout
    return parsed


def json_of(env: dict[str, str], *args: str) -> tuple[dict[str, Any], str]:
    """`odbox-backup ARGS… --json`: its document and its stderr."""
    result = backup(env, *args, "--json")
    return document(result), result.stderr


def test_init_and_run_json_give_the_repository_then_the_snapshot_and_its_totals(odoo, backend, env):
    name, _, filestore = odoo
    made, log = json_of(env, "init", "--repo", backend)
    assert set(made) == {"schema", "repository", "id", "encrypted", "recipients",
                         "auth_key_file", "auth_key_written"}  # fmt: skip
    assert made["encrypted"] is False and made["recipients"] == 0
    assert made["repository"].endswith("repo") and "created repository" in log

    run = ["run", "--repo", backend, "--db", name, "--filestore", str(filestore)]
    first, log = json_of(env, *run)
    assert set(first) == SNAPSHOT_MADE
    listed = json.loads(backup(env, "list", "--repo", backend, "--json").stdout)
    assert first["snapshot"] == listed[0]["id"] and first["bytes"] == listed[0]["bytes"]
    assert first["files"] == listed[0]["files"] > 0 and first["database"] == name
    objects = first["objects"]  # a first run reuses only what it stored twice itself
    assert objects["total"] >= objects["new"] > 0 and first["bytes_added"] > 0
    assert objects["reused"] == objects["total"] - objects["new"]
    assert first["dump"]["reused"] is False and first["dump"]["bytes"] > 0
    assert first["attachments"] == {"missing": 0, "first_missing": None}
    assert first["seconds"] >= 0 and first["mode"] == "hot"
    # the log the run says without --json: its phases, and its one-line summary
    assert f"dumping database {name}" in log and f"snapshot {first['snapshot']}:" in log

    # Nothing changed but the cluster's WAL (the tests share one cluster): every file is
    # reused, and the dump is taken over when the WAL did not move, as the log says.
    second, log = json_of(env, *run)
    assert second["dump"]["reused"] is ("its dump is reused" in log)
    assert second["objects"]["new"] < first["objects"]["new"]
    assert second["bytes_added"] < first["bytes_added"]
    # (not the totals: `objects.total`, like `bytes_read`, counts what the run read, and the
    # first run reads a file written less than 2 s before it twice)


def test_run_json_says_the_dump_was_reused_when_the_run_took_the_previous_one_over():
    """The WAL of a cluster the tests share moves between two runs, so the CLI test above
    cannot make a dump be reused: the document is checked on a run that did."""
    from odbox_backup.report import snapshot_made

    database = {"name": "odoo", "size": 10, "objects": ["a"], "wal": {"lsn": "0/1"}}
    manifest = {
        "id": "s2",
        "time": "t",
        "database": dict(database),
        "source": "run",
        "filestore": {"count": 0, "bytes": 0, "missing": 0},
        "totals": {"bytes": 10, "new_bytes": 0, "objects": 1, "new_objects": 0},
    }
    repo = type("Repo", (), {"store": type("Store", (), {"url": "/repo"})()})()
    made = snapshot_made(repo, manifest, {"id": "s1", "database": database})
    assert made["dump"] == {"reused": True, "bytes": 10} and set(made) == SNAPSHOT_MADE
    dumped = snapshot_made(repo, manifest, {"id": "s1", "database": database | {"size": 9}})
    assert dumped["dump"]["reused"] is False
    assert snapshot_made(repo, manifest, None)["dump"]["reused"] is False


def test_run_json_names_the_missing_attachments_and_still_exits_1(odoo, backend, env):
    name, _, filestore = odoo
    json_of(env, "init", "--repo", backend)
    lost = next(p for p in sorted(filestore.rglob("*")) if p.is_file())
    lost.unlink()
    result = backup(env, "run", "--repo", backend, "--db", name, "--filestore", str(filestore),
                    "--json")  # fmt: skip
    assert result.returncode == 1 and "--allow-missing" in result.stderr
    made = json.loads(result.stdout)  # the snapshot was written all the same
    assert made["attachments"]["missing"] >= 1
    assert made["attachments"]["first_missing"] == lost.relative_to(filestore).as_posix()


def test_copy_json_says_what_each_snapshot_sent(odoo, backend, env, tmp_path):
    name, _, filestore = odoo
    local = str(tmp_path / "local")
    json_of(env, "init", "--repo", local)
    json_of(env, "init", "--repo", backend)
    made, _ = json_of(env, "run", "--repo", local, "--db", name, "--filestore", str(filestore))

    copied, log = json_of(env, "copy", "--repo", local, "latest", "--to", backend)
    assert set(copied) == {"schema", "repository", "to", "snapshots", "objects_sent",
                           "bytes_sent"}  # fmt: skip
    assert copied["repository"].endswith("local") and copied["to"].endswith("repo")
    [one] = copied["snapshots"]
    assert one["snapshot"] == made["snapshot"] and one["copied"] is True
    assert one["objects_sent"] == copied["objects_sent"] > 0
    assert one["bytes_sent"] == copied["bytes_sent"] > 0
    assert f"copied snapshot {made['snapshot']}" in log

    again, log = json_of(env, "copy", "--repo", local, "latest", "--to", backend)
    assert again["snapshots"][0]["copied"] is False and again["bytes_sent"] == 0
    assert "already in" in log


def test_export_and_import_json(odoo, backend, env, tmp_path):
    name, _, filestore = odoo
    json_of(env, "init", "--repo", backend)
    made, _ = json_of(env, "run", "--repo", backend, "--db", name, "--filestore", str(filestore))
    out = tmp_path / "odoo.zip"

    exported, log = json_of(env, "export", "--repo", backend, "latest", "--odoo-zip", str(out))
    assert exported == {"schema": 1, "repository": made["repository"],
                        "snapshot": made["snapshot"], "path": str(out), "files": made["files"],
                        "bytes": exported["bytes"]}  # fmt: skip
    assert exported["bytes"] > 0 and f"wrote {out}" in log  # the filestore's bytes

    imported, log = json_of(env, "import", "--repo", backend, str(out), "--db-name", "again")
    assert set(imported) == SNAPSHOT_MADE | {"source"}
    assert imported["source"] == str(out) and imported["database"] == "again"
    assert imported["files"] == made["files"] and imported["mode"] == "unknown"
    assert imported["dump"]["reused"] is None  # an import never takes a dump over
    assert imported["snapshot"] != made["snapshot"] and "imported odoo.zip" in log


def test_restore_and_drop_previous_json(odoo, backend, env, tmp_path):
    name, dsn, filestore = odoo
    json_of(env, "init", "--repo", backend)
    made, _ = json_of(env, "run", "--repo", backend, "--db", name, "--filestore", str(filestore))
    at_backup = odoo_state(dsn, filestore)
    _, service = odoo_service(tmp_path)
    live = ["--db", name, "--filestore", str(filestore)]

    done, log = json_of(env, "restore", "--repo", backend, "latest", *live, *service)
    assert set(done) == RESTORE and done["action"] == "restore"
    assert done["snapshot"] == made["snapshot"] and done["database"] == name
    assert done["repository"] == made["repository"] and done["filestore"] == str(filestore)
    kept_db, kept_folder = done["previous"]["database"], done["previous"]["filestore"]
    assert kept_db.startswith(f"{name}_before_") and Path(kept_folder).is_dir()
    assert done["files"] == made["files"] and done["bytes"] > 0
    assert done["attachments"]["missing"] == 0 and done["attachments"]["first_missing"] is None
    assert done["attachments"]["checked"] > 0 and done["written"] is None
    assert "attachments verified" in log and "kept the previous ones" in log
    assert odoo_state(dsn, filestore) == at_backup

    would, log = json_of(env, "drop-previous", *live, "--dry-run")
    assert set(would) == {"schema", "database", "filestore", "dry_run", "dropped", "databases",
                          "folders", "sessions", "in_use"}  # fmt: skip
    assert would["dry_run"] is True and would["dropped"] is False
    assert would["databases"] == [kept_db] and would["folders"] == [kept_folder]
    assert f"would drop database {kept_db}" in log and Path(kept_folder).is_dir()

    dropped, log = json_of(env, "drop-previous", *live)
    assert dropped["dropped"] is True and dropped["databases"] == [kept_db]
    assert not Path(kept_folder).exists() and f"dropped {kept_folder}" in log

    nothing, log = json_of(env, "drop-previous", *live)
    assert nothing["dropped"] is False and nothing["databases"] == nothing["folders"] == []
    assert "nothing to drop" in log


def test_restore_only_json_lists_the_files_written(odoo, backend, env):
    name, _, filestore = odoo
    json_of(env, "init", "--repo", backend)
    json_of(env, "run", "--repo", backend, "--db", name, "--filestore", str(filestore))
    lost = next(p for p in sorted(filestore.rglob("*")) if p.is_file())
    content = lost.read_bytes()
    lost.unlink()
    rel = lost.relative_to(filestore).as_posix()

    done, log = json_of(env, "restore", "--repo", backend, "latest", "--db", name,
                        "--filestore", str(filestore), "--only", rel)  # fmt: skip
    assert set(done) == RESTORE and done["action"] == "only"
    assert done["written"] == [rel] and done["unchanged"] == [] and done["files"] == 1
    assert done["database"] is None and done["previous"] == {"database": None, "filestore": None}
    assert lost.read_bytes() == content and f"restored {lost}" in log


@pytest.mark.parametrize("action", ["resume", "undo"])
def test_restore_resume_and_undo_json_name_the_swap_they_took(
    action, odoo, local_env, tmp_path, postgres
):
    """A restore killed in the middle of its swap (the journal's hook), then `--resume` or
    `--undo` with --json: the journal's names, and null for what it does not know."""
    env = local_env
    name, _, filestore = odoo
    repo = str(tmp_path / "repo")
    json_of(env, "init", "--repo", repo)
    made, _ = json_of(env, "run", "--repo", repo, "--db", name, "--filestore", str(filestore))
    _, service = odoo_service(tmp_path)
    live = ["--db", name, "--filestore", str(filestore), *service]
    killed = backup({**env, KILL_AT_STEP: "4"}, "restore", "--repo", repo, "latest", *live)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    done, log = json_of(env, "restore", f"--{action}", *live)
    assert set(done) == RESTORE and done["action"] == action
    assert done["snapshot"] == made["snapshot"] and done["database"] == name
    assert done["filestore"] == str(filestore) and done["repository"] is None
    assert done["files"] is None and done["bytes"] is None and done["written"] is None
    assert done["attachments"] == {"checked": None, "missing": None, "first_missing": None}
    kept = postgres.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}_before_%'")
    if action == "resume":
        assert done["previous"]["database"] == kept.strip() and "finished" in log
        assert Path(done["previous"]["filestore"]).is_dir()
    else:
        assert done["previous"] == {"database": None, "filestore": None} and "undid" in log
        assert kept.strip() == ""


def test_unlock_json_lists_the_locks_removed_and_kept(backend, env, request):
    import datetime as dt
    import socket

    from tests.backup.conftest import moto_for
    from tests.backup.helpers import store_for

    json_of(env, "init", "--repo", backend)
    store = store_for(backend, moto_for(backend, request))
    now = dt.datetime.now(dt.UTC).isoformat()
    for key, host, pid in [("dead", socket.gethostname(), 2**22 + 17), ("other", "other-box", 1)]:
        lock = {"host": host, "pid": pid, "time": now, "command": "odbox-backup run",
                "mode": "write", "repository": "x"}  # fmt: skip
        store.put(f"locks/{key}.json", json.dumps(lock).encode())

    done, log = json_of(env, "unlock", "--repo", backend)
    assert set(done) == {"schema", "repository", "removed", "kept"}
    [removed], [kept] = done["removed"], done["kept"]
    assert removed["host"] == socket.gethostname() and removed["live"] is False
    assert kept["host"] == "other-box" and kept["command"] == "odbox-backup run"
    assert "removed the stale lock" in log and "kept the live lock" in log


def test_every_report_that_is_an_object_carries_the_schema(odoo, backend, env):
    """verify, prune, status, stats, diff, tag, repair index and recipients list had --json
    before the schema key: their documents carry it too (list and ls print arrays)."""
    name, _, filestore = odoo
    backup(env, "init", "--repo", backend)
    run = ["run", "--repo", backend, "--db", name, "--filestore", str(filestore)]
    first, _ = json_of(env, *run)
    second, _ = json_of(env, *run)
    old, new = first["snapshot"], second["snapshot"]
    for args in (["verify"], ["prune", "--keep-last", "5", "--dry-run"], ["status"],
                 ["stats"], ["diff", old, new], ["tag", "add", new, "kept"],
                 ["repair", "index"], ["recipients", "list"]):  # fmt: skip
        made, _ = json_of(env, *args, "--repo", backend)
        assert made["schema"] == 1, args
    assert isinstance(json.loads(backup(env, "ls", new, "--repo", backend, "--json").stdout), list)
