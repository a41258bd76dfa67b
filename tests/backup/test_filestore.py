"""No part of the filestore is left out without a word: symlinked folders are followed, an
unreadable folder fails the run, and an attachment the database names but the filestore
lacks is said in the result line and the exit status."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.backup.helpers import ODBOX_BACKUP, backup, backup_ok, backup_run, show
from tests.helpers import one_error_line


def _run(env, repo, odoo, *extra):
    name, _, filestore = odoo
    return backup(env, "run", "--repo", repo, "--db", name, "--filestore", str(filestore), *extra)


def test_a_symlinked_folder_is_followed(odoo, local_env, tmp_path):
    env = local_env
    filestore = odoo[2]
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    moved = sorted(p for p in filestore.iterdir() if p.is_dir())[0]
    inside = sorted(f"{moved.name}/{p.name}" for p in moved.iterdir())
    assert inside
    other_disk = tmp_path / "disk2" / moved.name
    other_disk.parent.mkdir()
    shutil.move(moved, other_disk)
    moved.symlink_to(other_disk)  # a common way to spread a filestore over disks
    backup_run(env, repo, odoo)
    paths = {f["path"] for f in show(env, repo, "latest")["filestore"]["files"]}
    assert set(inside) <= paths


def test_a_dangling_symlink_or_an_unreadable_folder_fails_naming_it(odoo, local_env, tmp_path):
    env = local_env
    filestore = odoo[2]
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    dangling = filestore / "zz"
    dangling.symlink_to(tmp_path / "unmounted-disk")
    result = _run(env, repo, odoo)
    assert result.returncode == 1 and f"{dangling} is a symlink" in one_error_line(result)
    dangling.unlink()

    locked = sorted(p for p in filestore.iterdir() if p.is_dir())[0]
    locked.chmod(0)
    try:
        # root reads whatever the mode: without these capabilities it is bound by it too
        bound = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
        name = odoo[0]
        result = subprocess.run(
            [*(bound if os.geteuid() == 0 else []), str(ODBOX_BACKUP), "run", "--repo", repo,
             "--db", name, "--filestore", str(filestore)],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
    finally:
        locked.chmod(0o755)
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"cannot read the filestore's folder {locked}" in line and "Permission denied" in line
    assert not (tmp_path / "repo" / "snapshots").exists()  # no snapshot written


def test_an_attachment_missing_from_the_filestore_is_said_and_fails_the_run(
    odoo, local_env, tmp_path
):
    env = local_env
    filestore = odoo[2]
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    gone = sorted(p for p in filestore.rglob("*") if p.is_file())[0]
    gone.unlink()
    result = _run(env, repo, odoo)
    assert result.returncode == 1
    fname = f"{gone.parent.name}/{gone.name}"
    assert "names 1 attachment the filestore lacks" in one_error_line(result)
    assert fname in result.stderr and "--allow-missing" in result.stderr
    assert "1 attachment missing from the filestore" in result.stdout  # written all the same
    result = _run(env, repo, odoo, "--allow-missing")
    assert result.returncode == 0 and "1 attachment missing" in result.stdout
    assert show(env, repo, "latest")["filestore"]["missing"] == 1


def test_a_file_that_changed_size_since_it_was_listed_is_stored_as_it_was_read(tmp_path):
    """The walk lists a file's size, then reads it with one read of a byte more: a file that
    grew or shrank in between is stored as read to its end, and its size is what was read
    (the pass after the dump reads such a file again)."""
    from odbox_backup.filestore import _store_local
    from odbox_backup.repository import Repository
    from odbox_backup.sources import Counters
    from odbox_backup.store import LocalStore
    from odbox_common.progress import Progress

    repo = Repository.init(LocalStore(tmp_path / "repo"))
    path = tmp_path / "attachment"
    cases = [(10, b"grew" * 20_000), (70_000, b"shrank"), (0, b"was empty"), (5, b""), (3, b"abc")]
    stored = []
    for listed, content in cases:
        path.write_bytes(content)
        objects, size = _store_local(repo, str(path), listed, 4 << 20, Counters(), Progress())
        assert size == len(content)
        stored.append(objects)
    repo.flush()
    for (_, content), objects in zip(cases, stored, strict=True):
        assert b"".join(repo.get_object(name) for name in objects) == content
