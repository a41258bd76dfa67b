"""odbox-deploy without Odoo: the lock, usage errors, the checksum's rules, a fast --help."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

from odbox_deploy.addons import folder_checksum
from tests.deploy.helpers import ODBOX_DEPLOY
from tests.helpers import one_error_line


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ODBOX_DEPLOY), *args], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **env}, timeout=60)  # fmt: skip


def _addon(root: Path) -> Path:
    addon = root / "shop"
    (addon / "models").mkdir(parents=True)
    (addon / "__manifest__.py").write_text("{'name': 'shop', 'depends': ['base']}")
    (addon / "models" / "shop.py").write_text("x = 1\n")
    return addon


def test_the_checksum_ignores_compiled_python_and_sees_content_and_names(tmp_path: Path) -> None:
    addon = _addon(tmp_path)
    before = folder_checksum(addon)
    (addon / "models" / "__pycache__").mkdir()
    (addon / "models" / "__pycache__" / "shop.cpython-311.pyc").write_bytes(b"\0compiled")
    (addon / "models" / "shop.pyc").write_bytes(b"\0compiled")
    assert folder_checksum(addon) == before
    (addon / "models" / "shop.py").write_text("x = 2\n")
    changed = folder_checksum(addon)
    assert changed != before
    (addon / "models" / "shop.py").rename(addon / "models" / "store.py")
    assert folder_checksum(addon) != changed  # same bytes under another name


def test_a_second_apply_while_one_holds_the_lock_exits_4(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with open(state / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = _run("apply", "--db", "odoo", "--odoo-conf", "/nonexistent", "--odoo-root",
                      "/nonexistent", "--filestore", str(tmp_path), "--stop-command", "true",
                      "--start-command", "true", "--state-dir", str(state))  # fmt: skip
    assert result.returncode == 4
    assert "another odbox-deploy run holds" in one_error_line(result)


def test_status_with_no_deploy_yet_says_so(tmp_path: Path) -> None:
    result = _run("status", "--state-dir", str(tmp_path / "none"))
    assert result.returncode == 0 and "no deploy has run here" in result.stdout


def test_an_empty_stop_command_is_a_usage_error(tmp_path: Path) -> None:
    result = _run("apply", "--db", "odoo", "--odoo-conf", "x", "--odoo-root", "x",
                  "--filestore", "x", "--stop-command", "", "--start-command", "true",
                  "--state-dir", str(tmp_path))  # fmt: skip
    assert result.returncode == 2
    assert "--stop-command is empty" in one_error_line(result)


def test_help_is_fast_and_imports_no_psycopg() -> None:
    result = _run("apply", "--help")
    assert result.returncode == 0 and "--rollback-command" in result.stdout
    probe = subprocess.run(
        [str(ODBOX_DEPLOY.with_name("python")), "-c",
         "import sys; import odbox_deploy.cli; print('psycopg' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "False"


def test_the_checksum_cache_never_hides_a_change_of_the_same_size(tmp_path: Path) -> None:
    from odbox_deploy.addons import ChecksumCache

    addon = _addon(tmp_path)
    cache_file = tmp_path / "state" / "checksum-cache.json"
    cache = ChecksumCache.load(cache_file)
    first = folder_checksum(addon, cache=cache)
    cache.save()
    assert cache_file.stat().st_mode & 0o777 == 0o600
    source = addon / "models" / "shop.py"
    stat = source.stat()
    source.write_text("x = 3\n")  # same size; and the mtime put back as it was
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = folder_checksum(addon, cache=ChecksumCache.load(cache_file))
    assert again != first and again == folder_checksum(addon)
