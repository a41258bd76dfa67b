"""Bad input and bad moments: one clear line, a non-zero exit, no traceback, and every file
byte-identical (or, after a kill, a vault the next run completes)."""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.vaultgen.helpers import (
    VAULTGEN,
    changed,
    clean_env,
    one_error_line,
    snapshot,
    vaultgen,
    vaultgen_ok,
)


def new_age_key(path: Path) -> str:
    subprocess.run(["age-keygen", "-o", path], check=True, capture_output=True)
    return subprocess.run(
        ["age-keygen", "-y", path], check=True, capture_output=True, text=True
    ).stdout.strip()


def assert_refused(vault: Path, *args: str, code: int = 1, message: str, stdin: str = "") -> None:
    before = snapshot(vault)
    result = vaultgen(vault, *args, input=stdin)
    assert result.returncode == code, result.stderr
    line = one_error_line(result)
    assert message in line, line
    assert changed(before, snapshot(vault)) == set()


def test_a_wrong_age_key_is_refused(vault, tmp_path):
    new_age_key(tmp_path / "other.key")
    shutil.copy(tmp_path / "other.key", vault / "age.key")
    (vault / "passwords/root.txt").write_text("something to encrypt")
    assert_refused(vault, "generate", "--batch", message="encrypted to")
    assert_refused(vault, "decrypt", "passwords/admin.txt.age", message="another identity")


def test_a_corrupt_age_key_is_refused(vault):
    (vault / "age.key").write_text("AGE-SECRET-KEY-1NOTAKEYATALL\n")
    assert_refused(vault, "generate", "--batch", message="corrupt age identity")
    (vault / "age.key").write_text("just some text\n")
    assert_refused(vault, "generate", "--batch", message="not an age identity")
    assert_refused(vault, "rekey", message="not an age identity")


def test_a_truncated_age_file_is_refused(vault):
    target = vault / "passwords/root.txt.age"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    assert_refused(vault, "generate", "--batch", message="corrupt or truncated")
    assert_refused(vault, "decrypt", "passwords/root.txt.age", message="corrupt or truncated")
    assert_refused(vault, "rekey", "--new-identity", message="corrupt or truncated")
    assert not (vault / "age.key.new").exists()


def test_a_missing_age_key_beside_age_files_is_refused(vault):
    (vault / "age.key").unlink()
    assert_refused(vault, "generate", "--batch", message="age.key is missing")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["certs", "localhost", "--days", "abc"], "'--days'"),
        (["certs", "localhost", "--days", "900"], "'--days'"),
        (["decrypt", "passwords/root.txt.age", "--mode", "rwx"], "'--mode'"),
        (["decrypt", "passwords/root.txt.age", "--mode", "1777"], "'--mode'"),
        (["certs", "bad name!"], "invalid certificate name"),
        (["frobnicate"], "No such command"),
        (["generate", "--no-such-option"], "No such option"),
    ],
)
def test_an_unknown_option_value_is_a_usage_error(vault, args, message):
    assert_refused(vault, *args, code=2, message=message)


def test_a_bad_recipient_line_names_the_line(vault):
    (vault / "recipients.txt").write_text("# ok\nage1notarecipient\n")
    before = snapshot(vault)
    result = vaultgen(vault, "generate", "--batch")
    assert result.returncode == 1
    assert "recipients.txt:2" in one_error_line(result)
    assert changed(before, snapshot(vault)) == set()


def test_a_corrupt_manifest_is_refused(vault):
    (vault / "manifest.json").write_text("{ not json")
    assert_refused(vault, "generate", "--batch", message="manifest.json is corrupt")


def test_a_corrupt_state_cache_is_ignored_and_rebuilt(vault):
    (vault / ".vaultgen-state.json").write_text("garbage")
    before = snapshot(vault)
    vaultgen_ok(vault, "generate", "--batch")
    assert changed(before, snapshot(vault)) == {".vaultgen-state.json"}
    vaultgen_ok(vault, "check")


def test_check_of_a_missing_vault_is_one_line(tmp_path):
    result = vaultgen(tmp_path / "nowhere", "check")
    assert result.returncode == 1
    assert "no vault at" in one_error_line(result)


def as_user_bound_by_permissions() -> list[str]:
    """Root ignores permission bits; without these capabilities it is bound by them too."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def test_a_read_only_vault_folder_is_refused_and_nothing_changes(vault, tmp_path):
    (vault / "recipients.txt").write_text(new_age_key(tmp_path / "t.key") + "\n")
    folders = [vault, *(p for p in vault.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o500)
    try:
        before = snapshot(vault)
        result = subprocess.run(
            [*as_user_bound_by_permissions(), VAULTGEN, "--vault", vault, "generate", "--batch"],
            capture_output=True, text=True, env=clean_env(),
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert "read-only" in one_error_line(result)
        assert changed(before, snapshot(vault)) == set()
    finally:
        for folder in folders:
            folder.chmod(0o700)


def test_a_read_only_file_system_is_refused_and_nothing_changes(vault, small_filesystems):
    mount = small_filesystems.mount("4m")
    root = mount / "vault"
    shutil.copytree(vault, root)
    (root / "passwords/admin.txt").write_text("changed before the remount")
    small_filesystems.remount_read_only(mount)
    before = snapshot(root)
    result = vaultgen(root, "generate", "--batch")
    assert result.returncode == 1
    assert "read-only" in one_error_line(result)
    assert changed(before, snapshot(root)) == set()


def test_a_full_disk_is_refused_and_nothing_changes(vault, small_filesystems, tmp_path):
    mount = small_filesystems.mount("512k")
    root = mount / "vault"
    shutil.copytree(vault, root)
    (root / "recipients.txt").write_text(new_age_key(tmp_path / "teammate.key") + "\n")
    free = shutil.disk_usage(mount).free
    (mount / "filler").write_bytes(b"\0" * (free - 8192))  # room for a few files, not all
    before = snapshot(root)
    result = vaultgen(root, "generate", "--batch")
    assert result.returncode == 1
    assert "no space left" in one_error_line(result)
    assert changed(before, snapshot(root)) == set()
    assert not list(root.rglob("*.vaultgen-tmp-*")), "staged temp files must be removed"
    (mount / "filler").unlink()
    vaultgen_ok(root, "generate", "--batch")
    vaultgen_ok(root, "check")


def test_a_second_run_while_one_holds_the_vault_exits_4(vault):
    (vault / "passwords/root.txt").write_text("a pending change")
    with (vault / ".lock").open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        before = snapshot(vault)
        result = vaultgen(vault, "generate", "--batch")
        assert result.returncode == 4
        assert "another vaultgen run" in one_error_line(result)
        assert changed(before, snapshot(vault)) == set()
    vaultgen_ok(vault, "generate", "--batch")


def test_two_concurrent_runs_leave_a_consistent_vault(vault, tmp_path):
    (vault / "recipients.txt").write_text(new_age_key(tmp_path / "t.key") + "\n")
    runs = [
        subprocess.Popen([VAULTGEN, "--vault", vault, "generate", "--batch"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
        for _ in range(2)
    ]  # fmt: skip
    codes = sorted(run.wait() for run in runs)
    assert codes in ([0, 0], [0, 4])
    vaultgen_ok(vault, "check")


def kill_at_random_moments(args: list[str | Path], trials: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(trials):
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env()
        )
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_generate_killed_at_random_moments_is_completed_by_the_next_run(tmp_path):
    root = tmp_path / "vault"
    kill_at_random_moments([VAULTGEN, "--vault", root, "generate", "--batch"], trials=12, seed=2)
    vaultgen_ok(root, "generate", "--batch")
    vaultgen_ok(root, "check")
    before = snapshot(root)
    vaultgen_ok(root, "generate", "--batch")
    assert changed(before, snapshot(root)) == set()


def test_rekey_killed_at_random_moments_is_completed_by_running_it_again(vault):
    plain = {p: p.with_suffix("").read_bytes() for p in vault.rglob("*.age")}
    kill_at_random_moments([VAULTGEN, "--vault", vault, "rekey", "--new-identity"], 12, seed=3)
    vaultgen_ok(vault, "rekey", "--new-identity")
    assert not (vault / "age.key.new").exists()
    for path, data in plain.items():
        out = subprocess.run(
            ["age", "-d", "-i", vault / "age.key", path], capture_output=True, check=True
        ).stdout
        assert out == data, path
    vaultgen_ok(vault, "check")


def test_no_traceback_without_debug_and_one_with_it(vault):
    (vault / "age.key").write_text("junk\n")
    quiet = vaultgen(vault, "generate", "--batch")
    assert "Traceback" not in quiet.stderr
    loud = vaultgen(vault, "--debug", "generate", "--batch")
    assert loud.returncode != 0 and "Traceback" in loud.stderr
    assert os.environ.get("VAULTGEN_DEBUG") is None
