"""Bad input and bad moments: one clear line, a non-zero exit, no traceback, and every file
byte-identical (or, after a kill, a vault the next run completes)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vaultgen.conftest import git
from tests.vaultgen.helpers import (
    VAULTGEN,
    assert_refused,
    changed,
    clean_env,
    new_age_key,
    one_error_line,
    snapshot,
    vaultgen,
    vaultgen_ok,
)
from vaultgen.layout import GITIGNORE_TEXT


def test_a_wrong_age_key_is_refused(vault, tmp_path):
    new_age_key(tmp_path / "other.key")
    shutil.copy(tmp_path / "other.key", vault / "age.key")
    (vault / "passwords/root.txt").write_text("something to encrypt")
    assert_refused(vault, "generate", "--batch", message="encrypted to")
    assert_refused(vault, "decrypt", "passwords/admin.txt.age", message="another identity")


def test_a_corrupt_age_key_is_refused(vault):
    (vault / "age.key").write_text("AGE-SECRET-KEY-1NOTAKEYATALL\n")
    assert_refused(vault, "generate", "--batch", code=2, message="corrupt age identity")
    (vault / "age.key").write_text("just some text\n")
    assert_refused(vault, "generate", "--batch", code=2, message="not an age identity")
    assert_refused(vault, "rekey", code=2, message="not an age identity")


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
    assert result.returncode == 2
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
    assert result.returncode == 2
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


def test_rekey_new_identity_on_a_full_disk_changes_nothing_and_blocks_nothing(
    vault, small_filesystems
):
    mount = small_filesystems.mount("512k")
    root = mount / "vault"
    shutil.copytree(vault, root)
    free = shutil.disk_usage(mount).free
    (mount / "filler").write_bytes(b"\0" * (free - 8192))  # room for a new key, not 17 files
    before = snapshot(root)
    result = vaultgen(root, "rekey", "--new-identity")
    assert result.returncode == 1
    assert "no space left" in one_error_line(result)
    assert changed(before, snapshot(root)) == set(), "age.key.new is left behind"
    (mount / "filler").unlink()
    vaultgen_ok(root, "generate", "--batch")  # not "an interrupted rekey left age.key.new"
    vaultgen_ok(root, "rekey", "--new-identity")
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


def test_status_and_check_wait_for_no_one_but_refuse_while_a_run_writes(vault):
    with (vault / ".lock").open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        for command in ("status", "check"):
            result = vaultgen(vault, command)
            assert result.returncode == 4
            assert "another vaultgen run is writing" in one_error_line(result)
    vaultgen_ok(vault, "status")


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


# A SIGKILL after exactly N renames, for every N until a run completes: every moment of the
# commit is hit (a kill at a random time almost never lands in the few milliseconds of renames).
CRASH_AFTER_RENAMES = """
import os, pathlib, signal, sys
limit, renames = int(os.environ["CRASH_AFTER_RENAMES"]), [0]
original = pathlib.Path.replace
def replace(self, target):
    if renames[0] == limit:
        os.kill(os.getpid(), signal.SIGKILL)
    renames[0] += 1
    return original(self, target)
pathlib.Path.replace = replace
from vaultgen.cli import main
sys.argv[0] = "vaultgen"
main()
"""


def crash_after(renames: int, vault: Path, *args: str, stdin: str = "") -> int:
    result = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_RENAMES, "--vault", str(vault), *args],
        input=stdin, capture_output=True, text=True,
        env=clean_env(CRASH_AFTER_RENAMES=str(renames)),
    )  # fmt: skip
    return result.returncode


def each_crash(template: Path, tmp_path: Path, *args: str, stdin: str = "") -> Iterator[Path]:
    """A copy of the vault for each moment the command can be killed at, after the kill."""
    for renames in range(200):
        vault = tmp_path / f"crash-{renames}"
        shutil.copytree(template, vault)
        if crash_after(renames, vault, *args, stdin=stdin) == 0:
            shutil.rmtree(vault)
            assert renames > 3, "the command should rename several files"
            return
        yield vault
    raise AssertionError("the command never completed")


def test_a_password_change_killed_at_any_rename_is_completed_by_the_next_run(vault, tmp_path):
    old = (vault / "passwords/admin.txt").read_text()
    new = "the new admin password"
    for crashed in each_crash(vault, tmp_path, "password", "admin", "--stdin", stdin=new):
        vaultgen_ok(crashed, "generate", "--batch")
        vaultgen_ok(crashed, "check")
        assert (crashed / "passwords/admin.txt").read_text() in (old, new)
        assert not list(crashed.rglob("*.vaultgen-tmp-*"))
        before = snapshot(crashed)
        vaultgen_ok(crashed, "generate", "--batch")
        assert changed(before, snapshot(crashed)) == set()


def test_a_new_vault_killed_at_any_rename_is_completed_by_the_next_run(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for n, crashed in enumerate(each_crash(empty, tmp_path, "generate", "--batch")):
        if n % 4:
            continue  # every fourth moment: a new vault renames some 40 files
        vaultgen_ok(crashed, "generate", "--batch")
        vaultgen_ok(crashed, "check")


PUBLIC_SUFFIXES = (".age", ".pub", "/manifest.json", "/.gitignore")


def test_a_first_generate_killed_at_any_rename_leaves_git_nothing_secret_to_commit(tmp_path):
    """The demo runs `git add -A` after vaultgen: whatever moment a first run dies at, git
    must see only public files (and at most the .gitignore's own temp twin)."""
    for renames in range(200):
        repo = tmp_path / f"crash-{renames}"
        repo.mkdir()
        git(repo, "init", "-q")
        completed = crash_after(renames, repo / "vault", "generate", "--batch") == 0
        git(repo, "add", "-A")
        for path in git(repo, "ls-files", "-z").split("\0"):
            if path and not path.endswith(PUBLIC_SUFFIXES):
                assert (repo / path).read_bytes() == GITIGNORE_TEXT, (
                    f"killed after {renames} renames, git would commit {path}"
                )
        if completed:
            assert renames > 10, "a first run renames some 40 files"
            return
        shutil.rmtree(repo)
    raise AssertionError("generate never completed")


def test_rekey_killed_at_any_rename_is_completed_by_running_it_again(vault, tmp_path):
    plain = {p.relative_to(vault): p.with_suffix("").read_bytes() for p in vault.rglob("*.age")}
    for crashed in each_crash(vault, tmp_path, "rekey", "--new-identity"):
        vaultgen_ok(crashed, "rekey", "--new-identity")
        assert not (crashed / "age.key.new").exists()
        for rel, data in plain.items():
            out = subprocess.run(
                ["age", "-d", "-i", crashed / "age.key", crashed / rel],
                capture_output=True, check=True,
            ).stdout  # fmt: skip
            assert out == data, rel
        vaultgen_ok(crashed, "check")
        shutil.rmtree(crashed)


def test_an_ssh_key_as_age_key_is_refused_in_one_line(vault):
    (vault / "age.key").write_bytes((vault / "ssh/id_ed25519").read_bytes())
    for command in ("generate", "rekey", "status"):
        assert_refused(vault, command, message="holds an SSH key")


def test_a_state_cache_of_the_wrong_shape_is_ignored(vault):
    (vault / ".vaultgen-state.json").write_text(
        '{"format": 1, "files": {"passwords/root.txt": "x"}}'
    )
    vaultgen_ok(vault, "generate", "--batch")
    vaultgen_ok(vault, "check")


def test_a_manifest_of_the_wrong_shape_is_refused(vault):
    (vault / "manifest.json").write_text('{"format": 1, "files": ["not", "a", "map"]}')
    assert_refused(vault, "generate", "--batch", message="manifest.json is corrupt")


class TestSymbolicLinks:
    def test_a_linked_file_is_refused_and_its_target_untouched(self, vault, tmp_path):
        target = tmp_path / "elsewhere"
        target.write_text("someone else's file")
        target.chmod(0o644)
        (vault / "passwords/exfil.txt").symlink_to(target)
        assert_refused(vault, "generate", "--batch", message="symbolic link")
        assert target.stat().st_mode & 0o777 == 0o644
        assert not (vault / "passwords/exfil.txt.age").exists()

    def test_a_linked_folder_is_refused(self, vault, tmp_path):
        outside = tmp_path / "outside"
        shutil.move(vault / "passwords", outside)
        outside.chmod(0o755)
        (vault / "passwords").symlink_to(outside)
        assert_refused(vault, "generate", "--batch", message="symbolic link")
        assert outside.stat().st_mode & 0o777 == 0o755


class TestWhereANewVaultMayGo:
    def test_not_over_a_folder_that_holds_other_things(self, tmp_path):
        project = tmp_path / "project"
        project.mkdir()
        (project / ".gitignore").write_text("build/\n")
        (project / "README.md").write_text("a project\n")
        before = snapshot(project)
        result = vaultgen(project, "generate", "--batch")
        assert result.returncode == 1
        assert "is not empty and is no vault" in one_error_line(result)
        assert changed(before, snapshot(project)) == set()
        assert project.stat().st_mode & 0o777 != 0o700

    def test_not_inside_another_vault(self, vault):
        result = vaultgen(vault / "vault", "generate", "--batch")
        assert result.returncode == 1
        assert "is inside the vault" in one_error_line(result)
        assert not (vault / "vault").exists()

    def test_a_folder_with_passwords_written_ahead_becomes_a_vault(self, tmp_path):
        root = tmp_path / "vault"
        (root / "passwords").mkdir(parents=True)
        (root / "passwords/admin.txt").write_text("chosen before the first run")
        vaultgen_ok(root, "generate", "--batch")
        assert (root / "passwords/admin.txt").read_text() == "chosen before the first run"


def test_no_traceback_without_debug_and_one_with_it(vault):
    (vault / "age.key").write_text("junk\n")
    quiet = vaultgen(vault, "generate", "--batch")
    assert quiet.returncode == 2
    assert "not an age identity" in one_error_line(quiet)
    loud = vaultgen(vault, "--debug", "generate", "--batch")
    assert loud.returncode != 0 and "Traceback" in loud.stderr
