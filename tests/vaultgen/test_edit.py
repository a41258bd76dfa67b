"""`vaultgen edit NAME`: the password in $EDITOR (here a script), in a 0700 folder in memory,
re-encrypted and re-hashed on save, and nothing left behind whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vaultgen.helpers import (
    VAULTGEN,
    age_decrypt,
    changed,
    clean_env,
    one_error_line,
    snapshot,
    vaultgen,
    vaultgen_ok,
)

EDITOR = """#!/bin/sh
# What a user does in the editor, and what the test needs to know about it.
dir=$(dirname "$1")
stat -c '%a' "$dir" > "$REPORT.dirmode"
stat -c '%a' "$1" > "$REPORT.filemode"
cp "$1" "$REPORT.given"
echo "$1" > "$REPORT.path"
echo $$ > "$REPORT.pid"
if [ -n "$WAIT" ]; then
    while [ ! -e "$REPORT.go" ]; do sleep 0.05; done  # the user is still typing
fi
printf '%s\\n' "$NEW" > "$1"
exit "${STATUS:-0}"
"""


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A folder of this test's own on a tmpfs, as $XDG_RUNTIME_DIR (/run/user/UID) is."""
    base = Path("/dev/shm")
    if not base.is_dir():
        pytest.skip("this machine has no /dev/shm tmpfs to stand for $XDG_RUNTIME_DIR")
    path = base / f"vaultgen-test-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(mode=0o700)
    yield path
    subprocess.run(["rm", "-rf", path], check=True)


def editor_env(tmp_path: Path, runtime_dir: Path, **extra: str) -> dict[str, str]:
    script = tmp_path / "editor.sh"
    script.write_text(EDITOR)
    script.chmod(0o755)
    return clean_env(
        EDITOR=str(script), XDG_RUNTIME_DIR=str(runtime_dir), REPORT=str(tmp_path / "report"),
        **extra,
    )  # fmt: skip


def leftovers(runtime_dir: Path) -> list[Path]:
    return list(runtime_dir.iterdir())


def test_edit_re_encrypts_and_re_hashes_the_password(vault, tmp_path, runtime_dir):
    old = (vault / "passwords/admin.txt").read_bytes()
    env = editor_env(tmp_path, runtime_dir, NEW="typed in the editor")
    result = vaultgen(vault, "edit", "admin", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report.given").read_bytes() == old, "the editor gets the password"
    assert (tmp_path / "report.path").read_text().startswith(str(runtime_dir))
    assert (tmp_path / "report.dirmode").read_text().strip() == "700"
    assert (tmp_path / "report.filemode").read_text().strip() == "600"
    assert (vault / "passwords/admin.txt").read_text() == "typed in the editor"
    age = age_decrypt(vault / "passwords/admin.txt.age", vault / "age.key")
    assert age.stdout == b"typed in the editor"
    vaultgen_ok(vault, "check")  # the hashes verify the new password
    assert leftovers(runtime_dir) == []


def test_a_new_password_starts_empty(vault, tmp_path, runtime_dir):
    env = editor_env(tmp_path, runtime_dir, NEW="the smtp password")
    result = vaultgen(vault, "edit", "smtp", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report.given").read_bytes() == b""
    assert (vault / "passwords/smtp.txt").read_text() == "the smtp password"
    vaultgen_ok(vault, "check")


def test_an_unchanged_password_changes_nothing(vault, tmp_path, runtime_dir):
    env = editor_env(tmp_path, runtime_dir, NEW=(vault / "passwords/admin.txt").read_text())
    before = snapshot(vault)
    result = vaultgen(vault, "edit", "admin", env=env)
    assert result.returncode == 0, result.stderr
    assert "unchanged" in result.stdout
    assert changed(before, snapshot(vault)) == set()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"NEW": "a new one", "STATUS": "1"}, "the editor exited with status 1"),
        ({"NEW": "short"}, "at least 8 characters"),
    ],
)
def test_a_failed_edit_changes_nothing_and_leaves_nothing(
    vault, tmp_path, runtime_dir, extra, message
):
    before = snapshot(vault)
    result = vaultgen(vault, "edit", "admin", env=editor_env(tmp_path, runtime_dir, **extra))
    assert result.returncode == 1
    assert message in one_error_line(result)
    assert changed(before, snapshot(vault)) == set()
    assert leftovers(runtime_dir) == []


def start_waiting_edit(vault: Path, env: dict[str, str], report: Path) -> subprocess.Popen[str]:
    run = subprocess.Popen(
        [VAULTGEN, "--vault", vault, "edit", "admin"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, "WAIT": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not report.with_suffix(".pid").exists() or not report.with_suffix(".pid").read_text():
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the editor never started"
        time.sleep(0.05)
    return run


def editor_is_gone(report: Path) -> bool:
    pid = int(report.with_suffix(".pid").read_text())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_vaultgen_stopped_while_the_editor_runs_leaves_nothing(vault, tmp_path, runtime_dir, stop):
    report = tmp_path / "report"
    before = snapshot(vault)
    run = start_waiting_edit(vault, editor_env(tmp_path, runtime_dir), report)
    run.send_signal(stop)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "interrupted" in stderr
    assert leftovers(runtime_dir) == []
    assert editor_is_gone(report), "the editor is stopped with it"
    assert changed(before, snapshot(vault)) == set()


def test_the_folder_of_a_killed_edit_is_removed_by_the_next_one(vault, tmp_path, runtime_dir):
    report = tmp_path / "report"
    run = start_waiting_edit(vault, editor_env(tmp_path, runtime_dir), report)
    run.kill()  # SIGKILL: nothing of vaultgen runs any more
    run.wait(timeout=60)
    os.kill(int(report.with_suffix(".pid").read_text()), signal.SIGKILL)  # the orphaned editor
    assert editor_is_gone(report)
    run.communicate(timeout=60)  # the editor held the pipes
    (abandoned,) = leftovers(runtime_dir)
    assert (abandoned / "admin.txt").exists()
    report.with_suffix(".pid").unlink()
    vaultgen_ok(vault, "edit", "admin", env=editor_env(tmp_path, runtime_dir, NEW="next edit"))
    assert leftovers(runtime_dir) == []
    assert (vault / "passwords/admin.txt").read_text() == "next edit"


def test_ctrl_c_while_the_editor_runs_is_the_editors(vault, tmp_path, runtime_dir):
    """As git does: vi cancels a command on Ctrl-C, which the terminal sends to vaultgen too."""
    report = tmp_path / "report"
    env = editor_env(tmp_path, runtime_dir, NEW="saved after a Ctrl-C")
    run = start_waiting_edit(vault, env, report)
    run.send_signal(signal.SIGINT)
    report.with_suffix(".go").touch()  # the user goes on typing, saves and quits
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert (vault / "passwords/admin.txt").read_text() == "saved after a Ctrl-C"
    assert leftovers(runtime_dir) == []
